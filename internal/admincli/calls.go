package admincli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// request is one API call.
type request struct {
	method, path string
	body         []byte
	// bodyFile names a file whose content is the body (patch set).
	bodyFile string
}

// call is one call of the command line: its name ("list", or "patch get"
// for a call with a sub-call), the arguments it takes ("[X]" for one that
// may be left out), and the request it makes from them.
type call struct {
	name, synopsis, summary string
	request                 func(a []string) request
}

// calls lists the calls in the order usage shows them.
func calls() []call {
	return []call{
		{"list", "LABEL SUBDIR", "files with size, sha256, yanked (scope read)", func(a []string) request {
			return request{method: http.MethodGet, path: path("packages", a[0], a[1])}
		}},
		{"copy", "LABEL SUBDIR FILENAME TO", "hard-link into label TO, index it (scope promote)", func(a []string) request {
			return request{method: http.MethodPost, path: path("packages", a[:3]...) + "/copy", body: jsonBody("to", a[3])}
		}},
		{"move", "LABEL SUBDIR FILENAME TO", "copy, then remove from LABEL (scope promote)", func(a []string) request {
			return request{method: http.MethodPost, path: path("packages", a[:3]...) + "/move", body: jsonBody("to", a[3])}
		}},
		{"yank", "LABEL SUBDIR FILENAME [REASON]", "hide from solves, keep downloadable (scope yank)", func(a []string) request {
			reason := ""
			if len(a) == 4 {
				reason = a[3]
			}
			return request{method: http.MethodPost, path: path("packages", a[:3]...) + "/yank", body: jsonBody("reason", reason)}
		}},
		{"unyank", "LABEL SUBDIR FILENAME", "undo a yank (scope yank)", func(a []string) request {
			return request{method: http.MethodPost, path: path("packages", a...) + "/unyank"}
		}},
		{"delete", "LABEL SUBDIR FILENAME", "move to .trash/<date>/, unindex (scope delete)", func(a []string) request {
			return request{method: http.MethodDelete, path: path("packages", a...)}
		}},
		{"retention", "[--dry-run]", "run retention now, or list what would go and why (scope delete; read)", func(a []string) request {
			if len(a) == 1 && a[0] == "--dry-run" {
				return request{method: http.MethodGet, path: path("retention")}
			}
			return request{method: http.MethodPost, path: path("retention")}
		}},
		{"quotas", "", "each quota's usage and limit (scope read)", func(a []string) request {
			return request{method: http.MethodGet, path: path("quotas")}
		}},
		{"patch get", "LABEL SUBDIR", "print the label's repodata patch (scope patch)", func(a []string) request {
			return request{method: http.MethodGet, path: path("patches", a...)}
		}},
		{"patch set", "LABEL SUBDIR FILE", "set it from a patch_instructions.json", func(a []string) request {
			return request{method: http.MethodPut, path: path("patches", a[:2]...), bodyFile: a[2]}
		}},
		{"patch delete", "LABEL SUBDIR", "remove it", func(a []string) request {
			return request{method: http.MethodDelete, path: path("patches", a...)}
		}},
		{"proxy status", "", "the upstream channels: reachable, cached packages (scope read)", func(a []string) request {
			return request{method: http.MethodGet, path: path("proxy")}
		}},
		{"proxy purge", "NAME", "empty an upstream's cache (scope delete)", func(a []string) request {
			return request{method: http.MethodPost, path: path("proxy", a[0]) + "/purge"}
		}},
		{"owners list", "[PACKAGE]", "owned names and their owners (scope owners)", func(a []string) request {
			return request{method: http.MethodGet, path: path("owners", a...)}
		}},
		ownersCall("add", "add OWNER (a token name or oidc:<publisher>)"),
		ownersCall("remove", "remove OWNER"),
		ownersCall("transfer", "make OWNER the only owner"),
	}
}

// ownersCall is a change of a package's owners.
func ownersCall(name, summary string) call {
	return call{"owners " + name, "PACKAGE OWNER", summary, func(a []string) request {
		return request{method: http.MethodPost, path: path("owners", a[0]) + "/" + name, body: jsonBody("owner", a[1])}
	}}
}

// path is the API path of a collection and its escaped segments.
func path(collection string, segs ...string) string {
	p := "/api/v1/" + collection
	for _, s := range segs {
		p += "/" + url.PathEscape(s)
	}
	return p
}

func jsonBody(key, value string) []byte {
	b, _ := json.Marshal(map[string]string{key: value})
	return b
}

// parse turns a call's words into a request: it finds the call, then
// checks its number of arguments.
func parse(args []string) (request, error) {
	c, rest, err := find(args)
	if err != nil {
		return request{}, err
	}
	words := strings.Fields(c.synopsis)
	optional := 0
	for _, w := range words {
		if strings.HasPrefix(w, "[") {
			optional++
		}
	}
	if len(rest) < len(words)-optional || len(rest) > len(words) {
		return request{}, usageError("%s takes %s", c.name, c.synopsis)
	}
	for i, w := range words {
		if flag, ok := strings.CutPrefix(w, "[--"); ok && i < len(rest) && rest[i] != "--"+strings.TrimSuffix(flag, "]") {
			return request{}, usageError("%s takes %s, not %q", c.name, c.synopsis, rest[i])
		}
	}
	return c.request(rest), nil
}

// find returns the call that args start with, and the words after its
// name.
func find(args []string) (call, []string, error) {
	if len(args) == 0 {
		return call{}, nil, &Error{Msg: "no call given", Usage: true, Hint: "the calls are " + callNames()}
	}
	name, rest := args[0], args[1:]
	if subs := subCalls(name); subs != "" {
		if len(rest) == 0 {
			return call{}, nil, usageError("%s takes %s", name, subs)
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	for _, c := range calls() {
		if c.name == name {
			return c, rest, nil
		}
	}
	if group, sub, ok := strings.Cut(name, " "); ok {
		return call{}, nil, usageError("%s takes %s, not %q", group, subCalls(group), sub)
	}
	return call{}, nil, &Error{Msg: fmt.Sprintf("unknown call %q", name), Usage: true, Hint: "the calls are " + callNames()}
}

// subCalls lists the sub-calls of a call with them ("get, set or
// delete" for patch), or "".
func subCalls(group string) string {
	var subs []string
	for _, c := range calls() {
		if sub, ok := strings.CutPrefix(c.name, group+" "); ok {
			subs = append(subs, sub)
		}
	}
	if len(subs) < 2 {
		return strings.Join(subs, "")
	}
	return strings.Join(subs[:len(subs)-1], ", ") + " or " + subs[len(subs)-1]
}

// callNames lists the calls' first words: "list, copy, ... and patch".
func callNames() string {
	var names []string
	for _, c := range calls() {
		first, _, _ := strings.Cut(c.name, " ")
		if len(names) == 0 || names[len(names)-1] != first {
			names = append(names, first)
		}
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// load reads the body from r.bodyFile, if the call has one.
func (r *request) load() error {
	if r.bodyFile == "" {
		return nil
	}
	b, err := os.ReadFile(r.bodyFile)
	if err != nil {
		return failure("read patch: %v", err)
	}
	r.body = b
	return nil
}
