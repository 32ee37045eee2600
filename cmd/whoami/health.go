package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// cmdCheck is the HEALTHCHECK of the scratch image: no curl there.
func cmdCheck(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("whoami check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/health", "URL that must answer 200")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*url)
	if err != nil {
		fmt.Fprintf(stderr, "whoami check: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "whoami check: %s answered %s\n", *url, resp.Status)
		return 1
	}
	return 0
}

func toggleFlags(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet("whoami "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("unhealthy-file", defaultUnhealthyFile, "the health toggle file of 'serve'")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	return *file, true
}

func cmdSick(args []string, stderr io.Writer) int {
	file, ok := toggleFlags("sick", args, stderr)
	if !ok {
		return 2
	}
	// A scratch image has no /tmp until someone makes it.
	if err := os.MkdirAll(filepath.Dir(file), 0o1777); err != nil {
		fmt.Fprintf(stderr, "whoami sick: %v\n", err)
		return 1
	}
	if err := os.WriteFile(file, []byte("unhealthy\n"), 0o644); err != nil {
		fmt.Fprintf(stderr, "whoami sick: %v\n", err)
		return 1
	}
	return 0
}

func cmdWell(args []string, stderr io.Writer) int {
	file, ok := toggleFlags("well", args, stderr)
	if !ok {
		return 2
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "whoami well: %v\n", err)
		return 1
	}
	return 0
}
