package server

import "testing"

// TestChannelScope: a path of the local channel and the same path below
// an upstream (/proxy/<name>/) lie in the same label and subdir, so a
// limited token reads the same of both; "" is a path above a limit.
func TestChannelScope(t *testing.T) {
	for _, tc := range []struct{ path, label, subdir string }{
		{"/linux-64/x-1.0-0.conda", "main", "linux-64"},
		{"/label/dev/noarch/repodata.json", "dev", "noarch"},
		{"/channeldata.json", "main", ""},
		{"/label/dev/", "dev", ""},
		{"/label/", "", ""},
		{"/", "main", ""},
		{"/proxy/up/linux-64/x", "main", "linux-64"},
		{"/proxy/up/label/dev/noarch/x", "dev", "noarch"},
		{"/proxy/up/channeldata.json", "main", ""},
		{"/proxy/up/label/dev/channeldata.json", "dev", ""},
		{"/proxy/up/label/dev/", "dev", ""},
		{"/proxy/up/", "main", ""},
	} {
		if label, subdir := channelScope(tc.path); label != tc.label || subdir != tc.subdir {
			t.Errorf("channelScope(%q) = %q, %q; want %q, %q", tc.path, label, subdir, tc.label, tc.subdir)
		}
	}
}
