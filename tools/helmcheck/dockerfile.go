package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Instruction is one Dockerfile instruction (continuation lines joined).
type Instruction struct {
	Line    int
	Keyword string // upper case
	Args    string
}

// Stage is one FROM block.
type Stage struct {
	From         string // image, build args expanded
	Name         string // AS name
	Platform     string // --platform flag
	Instructions []Instruction
}

// Dockerfile is a parsed Dockerfile.
type Dockerfile struct {
	GlobalArgs map[string]string // ARGs before the first FROM, with defaults
	Stages     []Stage
}

// ParseDockerfile parses the instructions of a Dockerfile (no heredocs).
func ParseDockerfile(src []byte) (*Dockerfile, error) {
	df := &Dockerfile{GlobalArgs: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(src))
	var cur strings.Builder
	start, n := 0, 0
	var ins []Instruction
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		kw, args, _ := strings.Cut(cur.String(), " ")
		ins = append(ins, Instruction{Line: start, Keyword: strings.ToUpper(kw), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() > 0 {
		return nil, errors.New("Dockerfile ends inside a continued line")
	}
	for _, in := range ins {
		switch {
		case in.Keyword == "FROM":
			f := strings.Fields(in.Args)
			var st Stage
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				if v, ok := strings.CutPrefix(f[0], "--platform="); ok {
					st.Platform = v
				}
				f = f[1:]
			}
			if len(f) == 0 {
				return nil, fmt.Errorf("line %d: FROM without image", in.Line)
			}
			st.From = expandArgs(f[0], df.GlobalArgs)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			df.Stages = append(df.Stages, st)
		case len(df.Stages) == 0:
			if in.Keyword != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Keyword)
			}
			k, v, _ := strings.Cut(in.Args, "=")
			df.GlobalArgs[k] = v
		default:
			st := &df.Stages[len(df.Stages)-1]
			st.Instructions = append(st.Instructions, in)
		}
	}
	if len(df.Stages) == 0 {
		return nil, errors.New("Dockerfile has no FROM")
	}
	return df, nil
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// expandArgs replaces $X and ${X} with the values in args ("" when unknown).
func expandArgs(s string, args map[string]string) string {
	return argRef.ReplaceAllStringFunc(s, func(m string) string {
		return args[argRef.FindStringSubmatch(m)[1]]
	})
}

// Find returns the stage's instructions with the keyword.
func (s Stage) Find(kw string) []Instruction {
	var out []Instruction
	for _, in := range s.Instructions {
		if in.Keyword == kw {
			out = append(out, in)
		}
	}
	return out
}

// Env returns the stage's ARG defaults (overridden by buildArgs) and ENV
// values, in the order Docker sets them for a RUN at instruction index upto.
func (s Stage) Env(buildArgs map[string]string, upto int) map[string]string {
	env := map[string]string{}
	for i, in := range s.Instructions {
		if i >= upto {
			break
		}
		switch in.Keyword {
		case "ARG":
			for _, f := range strings.Fields(in.Args) {
				k, v, _ := strings.Cut(f, "=")
				if b, ok := buildArgs[k]; ok {
					v = b
				}
				env[k] = v
			}
		case "ENV":
			for _, f := range strings.Fields(in.Args) {
				k, v, ok := strings.Cut(f, "=")
				if !ok {
					continue
				}
				env[k] = expandArgs(strings.Trim(v, `"`), env)
			}
		}
	}
	return env
}

// goBuild matches the build command: its output path and package.
var goBuild = regexp.MustCompile(`go build .*-o (\S+) (\./cmd/persister)\s*$`)

// DockerfileSpec is what the Dockerfile must say.
type DockerfileSpec struct {
	GoVersion string // from go.mod, major.minor
	HTTPPort  string // default port of PERSISTER_HTTP_ADDR
}

// CheckDockerfile checks the Dockerfile's stages against the spec and returns
// the build stage's `go build` RUN (its index in the stage, and the command).
func CheckDockerfile(df *Dockerfile, spec DockerfileSpec) (build Stage, runIdx int, cmd string, err error) {
	var p Problems
	if len(df.Stages) < 2 {
		p.Addf("%d stage(s), want a build stage and a final stage", len(df.Stages))
		return Stage{}, 0, "", p.Err()
	}
	build, final := df.Stages[0], df.Stages[len(df.Stages)-1]
	if img := build.From; img != "golang:"+spec.GoVersion && !strings.HasPrefix(img, "golang:"+spec.GoVersion+"-") {
		p.Addf("build stage FROM %s, want golang:%s (go.mod)", img, spec.GoVersion)
	}
	if build.Name == "" {
		p.Addf("build stage has no name (FROM ... AS build)")
	}
	if img := final.From; img != "gcr.io/distroless/static-debian12:nonroot" && !strings.HasPrefix(img, "gcr.io/distroless/static-debian12:nonroot@sha256:") {
		p.Addf("final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot", img)
	}

	runIdx = -1
	for i, in := range build.Instructions {
		if in.Keyword == "RUN" && strings.Contains(in.Args, "go build") {
			if runIdx >= 0 {
				p.Addf("line %d: a second go build RUN", in.Line)
			}
			runIdx, cmd = i, in.Args
		}
	}
	if runIdx < 0 {
		p.Addf("build stage has no RUN go build")
		return build, runIdx, cmd, p.Err()
	}
	env := build.Env(nil, runIdx)
	if env["CGO_ENABLED"] != "0" && !strings.Contains(cmd, "CGO_ENABLED=0") {
		p.Addf("go build without CGO_ENABLED=0 (static binary)")
	}
	if _, ok := env["VERSION"]; !ok {
		p.Addf("build stage lacks ARG VERSION before the go build")
	}
	for _, want := range []string{"-trimpath", `-ldflags "-s -w -X main.version=${VERSION}"`} {
		if !strings.Contains(cmd, want) {
			p.Addf("go build lacks %s: %s", want, cmd)
		}
	}
	m := goBuild.FindStringSubmatch(cmd)
	if m == nil {
		p.Addf("go build does not end in -o <path> ./cmd/persister: %s", cmd)
	}

	if n := len(final.Find("RUN")) + len(final.Find("SHELL")); n > 0 {
		p.Addf("final stage has RUN/SHELL instructions (no shell at run time)")
	}
	copies := final.Find("COPY")
	if len(copies) != 1 || m == nil || copies[0].Args != fmt.Sprintf("--from=%s %s /persister", build.Name, m[1]) {
		p.Addf("final stage COPY %v, want one: --from=%s <go build output> /persister", copies, build.Name)
	}
	if u := final.Find("USER"); len(u) != 1 || (u[0].Args != "nonroot" && u[0].Args != "nonroot:nonroot" && u[0].Args != "65532" && u[0].Args != "65532:65532") {
		p.Addf("final stage USER %v, want nonroot", u)
	}
	if e := final.Find("EXPOSE"); len(e) != 1 || e[0].Args != spec.HTTPPort {
		p.Addf("final stage EXPOSE %v, want %s (PERSISTER_HTTP_ADDR default)", e, spec.HTTPPort)
	}
	exec := func(kw string, want []string) {
		ins := final.Find(kw)
		var got []string
		if len(ins) != 1 || json.Unmarshal([]byte(ins[0].Args), &got) != nil || !slices.Equal(got, want) {
			p.Addf("final stage %s %v, want exec form %q", kw, ins, want)
		}
	}
	exec("ENTRYPOINT", []string{"/persister"})
	exec("CMD", []string{"run"})
	return build, runIdx, cmd, p.Err()
}

// BuildLikeDocker runs the build stage's go build command the way the image
// build would: in a copy of the repository filtered by .dockerignore, with
// the stage's ARG and ENV values, through sh -c. It returns the binary path.
func BuildLikeDocker(ctx context.Context, repoRoot string, build Stage, runIdx int, cmd, version, outDir string) (string, error) {
	ign, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		return "", fmt.Errorf(".dockerignore: %w", err)
	}
	matcher, err := NewIgnore(string(ign))
	if err != nil {
		return "", err
	}
	contextDir := filepath.Join(outDir, "context")
	if err := CopyContext(repoRoot, contextDir, matcher); err != nil {
		return "", err
	}
	m := goBuild.FindStringSubmatch(cmd)
	if m == nil {
		return "", fmt.Errorf("no go build -o in %q", cmd)
	}
	bin := filepath.Join(outDir, "persister")
	cmd = strings.Replace(cmd, "-o "+m[1]+" ", "-o "+bin+" ", 1)
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Dir = contextDir
	c.Env = os.Environ()
	for k, v := range build.Env(map[string]string{"VERSION": version}, runIdx) {
		c.Env = append(c.Env, k+"="+v)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s (in the .dockerignore'd context): %w\n%s", cmd, err, out)
	}
	return bin, nil
}

// CheckBinary checks that the binary is static and stamped with version,
// and that it has the subcommands the image and the chart run.
func CheckBinary(ctx context.Context, bin, version string, commands []string) error {
	var p Problems
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("open binary: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			p.Addf("binary has a program interpreter: not static (CGO_ENABLED=0 missing?)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		p.Addf("binary links shared libraries %v", libs)
	}
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != version {
		p.Addf("persister version printed %q (%v), want %q (-X main.version)", out, err, version)
	}
	usage, _ := exec.CommandContext(ctx, bin, "help").CombinedOutput()
	for _, c := range commands {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(c) + `\s`).Match(usage) {
			p.Addf("persister help does not list the %q command:\n%s", c, usage)
		}
	}
	return p.Err()
}
