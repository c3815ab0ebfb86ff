package condapkg

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// postInstall is what conda-index's _cache_post_install_details finds in
// paths.json: embedded prefixes, activation scripts and link scripts.
type postInstall struct {
	BinaryPrefix, TextPrefix, Activate, Deactivate, PreLink, PostLink, PreUnlink bool
}

// The link scripts, as conda-index matches them: fnmatch "*/.*-<name>.*".
var (
	preLinkRe   = regexp.MustCompile(`(?s)^.*/\..*-pre-link\..*$`)
	postLinkRe  = regexp.MustCompile(`(?s)^.*/\..*-post-link\..*$`)
	preUnlinkRe = regexp.MustCompile(`(?s)^.*/\..*-pre-unlink\..*$`)
)

func (p *postInstall) add(path, placeholder, mode string) {
	if placeholder != "" {
		switch mode {
		case "binary":
			p.BinaryPrefix = true
		case "text":
			p.TextPrefix = true
		}
	}
	p.Activate = p.Activate || strings.HasPrefix(path, "etc/conda/activate.d")
	p.Deactivate = p.Deactivate || strings.HasPrefix(path, "etc/conda/deactivate.d")
	p.PreLink = p.PreLink || preLinkRe.MatchString(path)
	p.PostLink = p.PostLink || postLinkRe.MatchString(path)
	p.PreUnlink = p.PreUnlink || preUnlinkRe.MatchString(path)
}

// scanPaths checks that r holds one JSON value, and reads the _path,
// prefix_placeholder and file_mode of each entry of its "paths" list,
// token by token, so that a large paths.json is never held in memory.
func scanPaths(r io.Reader) (postInstall, error) {
	var p postInstall
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return p, jsonError(err)
	}
	if tok != json.Delim('{') {
		if err := skipRest(dec, tok); err != nil {
			return p, err
		}
		return p, trailing(dec)
	}
	for dec.More() {
		key, tok, err := pair(dec)
		if err != nil {
			return p, err
		}
		if key != "paths" || tok != json.Delim('[') {
			if err := skipRest(dec, tok); err != nil {
				return p, err
			}
			continue
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return p, jsonError(err)
			}
			if tok != json.Delim('{') {
				if err := skipRest(dec, tok); err != nil {
					return p, err
				}
				continue
			}
			var path, placeholder, mode string
			for dec.More() {
				k, v, err := pair(dec)
				if err != nil {
					return p, err
				}
				s, _ := v.(string)
				switch k {
				case "_path":
					path = s
				case "prefix_placeholder":
					placeholder = s
				case "file_mode":
					mode = s
				}
				if err := skipRest(dec, v); err != nil {
					return p, err
				}
			}
			if _, err := dec.Token(); err != nil { // '}'
				return p, jsonError(err)
			}
			p.add(path, placeholder, mode)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return p, jsonError(err)
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return p, jsonError(err)
	}
	return p, trailing(dec)
}

// pair reads an object member's key and the first token of its value.
func pair(dec *json.Decoder) (json.Token, json.Token, error) {
	k, err := dec.Token()
	if err != nil {
		return nil, nil, jsonError(err)
	}
	v, err := dec.Token()
	if err != nil {
		return nil, nil, jsonError(err)
	}
	return k, v, nil
}

// skipRest skips the rest of a value whose first token was tok.
func skipRest(dec *json.Decoder, tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		t, err := dec.Token()
		if err != nil {
			return jsonError(err)
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

func trailing(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Reason: "trailing data after the JSON value"}
	}
	return nil
}

// channelFields are the descriptive fields channeldata.json keeps from a
// package (conda-index's _update_channeldata), besides its record's.
var channelFields = []string{
	"description", "dev_url", "doc_url", "doc_source_url", "home", "license", "source_url", "source_git_url",
	"summary", "icon_url", "icon_hash", "tags", "identifiers", "keywords", "recipe_origin",
}

// channelData merges what channeldata.json takes from a package, as
// conda-index's load_all_from_cache does: the recipe, then about.json,
// then the post-install flags; the recipe's source fields as source_*;
// description and summary on one line. The record's own fields are laid
// over it when channeldata.json is written. It is nil when there is
// nothing to say.
func channelData(files infoFiles) []byte {
	data := map[string]any{}
	source := recipeSource(files.recipe)
	if files.about != nil {
		var about map[string]any
		dec := json.NewDecoder(bytes.NewReader(files.about))
		dec.UseNumber()
		if dec.Decode(&about) == nil {
			for k, v := range about {
				data[k] = v
			}
			if s, ok := about["source"].(map[string]any); ok {
				source = s
			}
		}
	}
	for k, v := range source {
		data["source_"+k] = v
	}
	for _, k := range []string{"description", "summary"} {
		switch v := data[k].(type) {
		case string:
			data[k] = strings.ReplaceAll(strings.TrimSpace(v), "\n", " ")
		case []any:
			if len(v) > 0 {
				if s, ok := v[0].(string); ok {
					data[k] = strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
				}
			}
		}
	}
	out := map[string]any{}
	for _, k := range channelFields {
		if v, ok := data[k]; ok {
			out[k] = v
		}
	}
	// Only the flags that are true: a missing one is false, and the
	// cache holds this for every package in memory.
	p := files.post
	for k, v := range map[string]bool{
		"binary_prefix": p.BinaryPrefix, "text_prefix": p.TextPrefix, "activate.d": p.Activate, "deactivate.d": p.Deactivate,
		"pre_link": p.PreLink, "post_link": p.PostLink, "pre_unlink": p.PreUnlink,
	} {
		if v {
			out[k] = true
		}
	}
	if len(out) == 0 {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(out) != nil {
		return nil
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// recipeSource reads the top-level source mapping of a rendered
// meta.yaml: its scalar values, and lists of scalars. conda-build renders
// meta.yaml as plain block YAML, and channeldata.json needs only the
// source's url and git_url, so this reads that much YAML and no more. A
// source that is a list of sources yields nothing, as in conda-index, and
// so does a recipe a YAML safe loader refuses, such as one of old
// conda-build with Python object tags.
func recipeSource(recipe []byte) map[string]any {
	if recipe == nil || bytes.Contains(recipe, []byte("!!python/")) {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(recipe))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := map[string]any{}
	in, indent := false, -1
	var listKey string
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimLeft(line, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		ind := len(line) - len(trimmed)
		if !in {
			if ind == 0 && (trimmed == "source:" || strings.HasPrefix(trimmed, "source: ")) {
				if rest := strings.TrimSpace(strings.TrimPrefix(trimmed, "source:")); rest != "" && !strings.HasPrefix(rest, "#") {
					return nil // a flow mapping or a scalar: not read
				}
				in = true
			}
			continue
		}
		if ind == 0 {
			break
		}
		if indent < 0 {
			if strings.HasPrefix(trimmed, "- ") || trimmed == "-" {
				return nil // a list of sources
			}
			indent = ind
		}
		switch {
		case ind > indent && listKey != "" && strings.HasPrefix(trimmed, "- "):
			out[listKey] = append(out[listKey].([]any), yamlScalar(strings.TrimPrefix(trimmed, "- ")))
		case ind == indent && listKey != "" && strings.HasPrefix(trimmed, "- "):
			out[listKey] = append(out[listKey].([]any), yamlScalar(strings.TrimPrefix(trimmed, "- ")))
		case ind == indent:
			key, val, ok := strings.Cut(trimmed, ":")
			if !ok {
				return nil
			}
			listKey = ""
			if val = strings.TrimSpace(val); val == "" {
				listKey = key
				out[key] = []any{}
				continue
			}
			out[key] = yamlScalar(val)
		}
	}
	return out
}

// yamlScalar reads a plain, single-quoted or double-quoted YAML scalar as
// a string, as conda-build writes URLs and paths.
func yamlScalar(s string) any {
	switch {
	case len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'':
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'")
	case len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"':
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
		return s[1 : len(s)-1]
	}
	if i := strings.Index(s, " #"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}
