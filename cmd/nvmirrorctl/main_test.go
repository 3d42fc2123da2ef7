package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nvmirror/nvmirror/pkg/adminctl"
)

func TestUsageErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		errPart string
	}{
		{nil, "a command is required"},
		{[]string{"--cert-file=/x", "--key-file=/y", "-o", "yaml", "volumes"}, `-o "yaml"`},
		{[]string{"volumes"}, "--cert-file and --key-file are required"},
		{[]string{"--cert-file=/x", "volumes"}, "--cert-file and --key-file are required"},
		{[]string{"--cert-file=/x", "--key-file=/y", "--bogus", "volumes"}, "bogus"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		var ue adminctl.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("%v: error %v, want a usage error mentioning %q", tc.args, err, tc.errPart)
		}
	}
}
