// Command composecheck loads Compose files the way `docker compose config` does and
// prints the resolved project as JSON, or the loader's errors with exit status 1.
//
// It uses github.com/compose-spec/compose-go/v2, the loader of the docker compose
// CLI: the files are validated against the Compose Specification's JSON Schema,
// variables are interpolated, and references between services, volumes, networks
// and secrets are checked. No Docker engine is needed.
//
//	composecheck [--env-file FILE] [--profile NAME]... COMPOSE_FILE...
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var envFiles, profiles listFlag
	flag.Var(&envFiles, "env-file", "file of VAR=value lines for ${VAR} substitution (repeatable; default: .env beside the first file, if present)")
	flag.Var(&profiles, "profile", "profile to enable (repeatable; '*' enables every profile)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [--env-file FILE] [--profile NAME]... COMPOSE_FILE...")
		os.Exit(2)
	}

	options, err := cli.NewProjectOptions(flag.Args(),
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: invalid options: %v\n", err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
		os.Exit(1)
	}
	encoded, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: cannot encode the project: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(encoded))
}
