package events

import (
	"fmt"
	"path/filepath"
	"testing"
)

func msgs(from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, []byte(fmt.Sprintf("m%d", i)))
	}
	return out
}

func datas(items []QueueItem) []string {
	var out []string
	for _, it := range items {
		out = append(out, string(it.Data))
	}
	return out
}

func TestQueueFIFOAndAck(t *testing.T) {
	q, err := OpenQueue(filepath.Join(t.TempDir(), "q.db"), 100)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Push(msgs(0, 5)...); err != nil {
		t.Fatal(err)
	}
	items, _ := q.Read(0, 3)
	if fmt.Sprint(datas(items)) != "[m0 m1 m2]" {
		t.Fatalf("Read(0,3) = %v", datas(items))
	}
	rest, _ := q.Read(items[2].Seq, 10)
	if fmt.Sprint(datas(rest)) != "[m3 m4]" {
		t.Fatalf("Read(after m2) = %v", datas(rest))
	}
	if err := q.Ack(items[1].Seq); err != nil {
		t.Fatal(err)
	}
	all, _ := q.Read(0, 10)
	if fmt.Sprint(datas(all)) != "[m2 m3 m4]" {
		t.Fatalf("after Ack(m1): %v", datas(all))
	}
	if s, _ := q.Stats(); s.Len != 3 || s.Dropped != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestQueueDropsOldestWhenFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q, err := OpenQueue(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := q.Push(msgs(0, 4)...); d != 0 {
		t.Errorf("dropped %d below the limit", d)
	}
	if d, _ := q.Push(msgs(4, 8)...); d != 3 {
		t.Errorf("dropped %d, want 3", d)
	}
	all, _ := q.Read(0, 100)
	if fmt.Sprint(datas(all)) != "[m3 m4 m5 m6 m7]" {
		t.Errorf("kept %v, want the newest 5", datas(all))
	}
	q.Close()

	// Contents and the drop counter survive a reopen.
	q, err = OpenQueue(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if s, _ := q.Stats(); s.Len != 5 || s.Dropped != 3 {
		t.Errorf("after reopen Stats = %+v, want len 5 dropped 3", s)
	}
	q.Push([]byte("m8"))
	all, _ = q.Read(0, 100)
	if fmt.Sprint(datas(all)) != "[m4 m5 m6 m7 m8]" {
		t.Errorf("after reopen and push: %v", datas(all))
	}
}
