package main

import (
	"flag"
	"strings"
	"testing"
)

func TestHealerFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		errPart string
	}{
		{nil, ""},
		{[]string{"--heal-interval=5s", "--heal-time-unit=1s"}, ""},
		{[]string{"--heal-interval=100ms"}, "--heal-interval"},
		{[]string{"--nvme-poll-interval=1ms"}, "--nvme-poll-interval"},
		{[]string{"--nvme-backstop-interval=500ms"}, "--nvme-backstop-interval"},
		{[]string{"--nvme-poll-interval=2s", "--nvme-backstop-interval=2s", "--kmsg-path="}, ""},
		{[]string{"--heal-time-unit=10ms"}, "--heal-time-unit"},
		{[]string{"--max-concurrent-replacements=0"}, "--max-concurrent-replacements"},
		{[]string{"--heal-retry-base=1m", "--heal-retry-max=10s"}, "--heal-retry-base"},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var h healerOptions
		h.addFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		err := h.validate()
		switch {
		case tc.errPart == "" && err != nil:
			t.Errorf("%v: unexpected error %v", tc.args, err)
		case tc.errPart != "" && (err == nil || !strings.Contains(err.Error(), tc.errPart)):
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.errPart)
		}
	}
}
