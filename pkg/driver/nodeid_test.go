package driver

import (
	"errors"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/volume"
)

const testNQN = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-41d2-883f-0016d3cca427"

func TestNodeIDRoundTrip(t *testing.T) {
	id, err := encodeNodeID("worker-1", testNQN)
	if err != nil {
		t.Fatal(err)
	}
	if id != "worker-1/"+testNQN {
		t.Fatalf("node ID %q", id)
	}
	name, nqn, err := parseNodeID(id)
	if err != nil || name != "worker-1" || nqn != testNQN {
		t.Fatalf("parse: %q %q %v", name, nqn, err)
	}
}

func TestEncodeNodeIDRefuses(t *testing.T) {
	tests := []struct{ name, node, nqn string }{
		{"empty node name", "", testNQN},
		{"separator in node name", "a/b", testNQN},
		{"bad NQN", "n", "not-an-nqn"},
		{"too long for Kubernetes", strings.Repeat("n", 130), testNQN},
	}
	for _, tt := range tests {
		if _, err := encodeNodeID(tt.node, tt.nqn); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestParseNodeIDUnknownIsNotFound(t *testing.T) {
	for _, id := range []string{"some-fake-node-id", "/" + testNQN, "n/not-an-nqn", "n/"} {
		if _, _, err := parseNodeID(id); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("parseNodeID(%q) = %v, want ErrNotFound", id, err)
		}
	}
}
