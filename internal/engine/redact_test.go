package engine

import (
	"slices"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		envs  []map[string]string
		want  []string
	}{
		{"no env", []string{"hello"}, nil, []string{"hello"}},
		{"one value", []string{"connecting to postgres://u:hunter2@db/x failed"},
			[]map[string]string{{"DATABASE_URL": "postgres://u:hunter2@db/x"}},
			[]string{"connecting to [redacted DATABASE_URL] failed"}},
		{"every occurrence", []string{"s3cr3t! and s3cr3t!", "s3cr3t!"},
			[]map[string]string{{"TOKEN": "s3cr3t!"}},
			[]string{"[redacted TOKEN] and [redacted TOKEN]", "[redacted TOKEN]"}},
		{"short values stay", []string{"mode prod on port 5000, debug=false"},
			[]map[string]string{{"MODE": "prod", "PORT2": "5000", "DEBUG": "false", "SIX": "sixsix"}},
			[]string{"mode prod on port 5000, debug=false"}},
		{"six characters are redacted", []string{"key=sixsix"},
			[]map[string]string{{"SIX": "sixsix"}},
			[]string{"key=[redacted SIX]"}},
		{"longest first: a value inside another is redacted whole", []string{"url postgres://u:hunter2secret@db/x pw hunter2secret"},
			[]map[string]string{{"PASSWORD": "hunter2secret", "DATABASE_URL": "postgres://u:hunter2secret@db/x"}},
			[]string{"url [redacted DATABASE_URL] pw [redacted PASSWORD]"}},
		{"overlapping values both hidden", []string{"xaaaaaabbbbbbccccccx"},
			[]map[string]string{{"A": "aaaaaabbbbbb", "B": "bbbbbbcccccc"}},
			[]string{"x[redacted A][redacted B]x"}},
		{"one value under two names: the first name", []string{"tok=abcdefgh"},
			[]map[string]string{{"ZED": "abcdefgh", "ALPHA": "abcdefgh"}},
			[]string{"tok=[redacted ALPHA]"}},
		{"several maps", []string{"old oldsecret new newsecret"},
			[]map[string]string{{"KEY": "newsecret"}, {"KEY": "oldsecret"}},
			[]string{"old [redacted KEY] new [redacted KEY]"}},
		{"a value that reads like the mark", []string{"secret=redacted"},
			[]map[string]string{{"A": "secret=redacted", "B": "redacted"}},
			[]string{"[redacted A]"}},
		{"nil lines", nil, []map[string]string{{"A": "abcdefgh"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.lines)
			got := redact(tc.lines, tc.envs...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("redact(%q) = %q, want %q", tc.lines, got, tc.want)
			}
			if !slices.Equal(in, tc.lines) {
				t.Errorf("redact changed its input: %q", tc.lines)
			}
		})
	}
}
