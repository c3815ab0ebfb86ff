package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/conda-upload-server/conda-upload-server/internal/auth"
	"github.com/conda-upload-server/conda-upload-server/internal/store"
)

// A token limited to labels or subdirs reads what it may upload to and
// nothing else, with the same 403 as an upload past its limits: a read
// token handed to one team's CI for label dev and linux-64 must not
// download another label's or platform's packages, nor learn their
// names from a listing or an index file.
//
// A path above a limit stands for everything below it, so only a token
// without that limit reads it: the list of labels (/label/) needs a
// token without labels; a label's root listing and its channeldata.json
// (which names every package of every subdir, with their versions) need
// a token without subdirs. conda, mamba, pixi and rattler read neither;
// they read <subdir>/ and noarch/ only, so a subdir-limited read token
// must list noarch too, as an upload token must to upload noarch
// packages.

// authorizeRead checks that a request for a channel path presents a token
// with the read scope whose limits cover the path.
func (s *Server) authorizeRead(r *http.Request) error {
	t, err := s.authorize(r, auth.ScopeRead)
	if err != nil {
		return err
	}
	label, subdir := channelScope(r.URL.Path)
	switch {
	case !t.AllowsLabel(label) && label == "":
		return newError(http.StatusForbidden, fmt.Sprintf("token %q may not read the list of labels", t.Name))
	case !t.AllowsLabel(label):
		return newError(http.StatusForbidden, fmt.Sprintf("token %q may not read label %s", t.Name, oneLine(label)))
	case !t.Allows(subdir) && subdir == "":
		return newError(http.StatusForbidden, fmt.Sprintf("token %q may not read what spans subdirs (listings, channeldata.json)", t.Name))
	case !t.Allows(subdir):
		return newError(http.StatusForbidden, fmt.Sprintf("token %q may not read subdir %s", t.Name, oneLine(subdir)))
	}
	return nil
}

// channelScope returns the label and the subdir a channel path (with its
// leading slash), or an upstream's (/proxy/<name>/<channel path>), lies
// in; "" stands for all of them: "/label/" is in no label, and "/",
// "/label/dev/" and "/channeldata.json" are in no subdir.
// Names need not exist: the channel's allow-list decides that, after.
func channelScope(path string) (label, subdir string) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if parts[0] == "proxy" && len(parts) > 2 {
		// An upstream's channel, /proxy/<name>/...: scoped as the local one.
		parts = parts[2:]
	}
	label = store.MainLabel
	if parts[0] == store.LabelDir {
		if len(parts) < 2 || parts[1] == "" {
			return "", ""
		}
		label, parts = parts[1], parts[2:]
	}
	if len(parts) == 0 || parts[0] == "" || (len(parts) == 1 && parts[0] == "channeldata.json") {
		return label, ""
	}
	return label, parts[0]
}
