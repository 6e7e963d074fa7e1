package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/dkimsign"
)

// cmdDKIM runs the dkim subcommands: keygen.
func cmdDKIM(args []string, stdout, stderr io.Writer) error {
	const use = "usage: mailgate dkim keygen -domain DOMAIN -selector SELECTOR [-algorithm rsa-sha256|ed25519-sha256] [-bits 2048] [-out DIR]"
	if len(args) == 0 || args[0] != "keygen" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "help") {
			fmt.Fprintln(stdout, use)
			return nil
		}
		fmt.Fprintln(stderr, use)
		return errUsage
	}
	return cmdDKIMKeygen(args[1:], use, stdout, stderr)
}

// cmdDKIMKeygen writes a private key for the dkim-sign stage and prints
// the DNS record that publishes its public half.
func cmdDKIMKeygen(args []string, use string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dkim keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, use)
	domain := fs.String("domain", "", "the signing domain, d= (required)")
	selector := fs.String("selector", "", "the selector, s= (required)")
	algorithm := fs.String("algorithm", dkimsign.RSASHA256, "rsa-sha256 or ed25519-sha256")
	bits := fs.Int("bits", 2048, "the RSA key's size in bits, 1024 to 4096")
	out := fs.String("out", ".", "the directory the key file is written to")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "mailgate dkim keygen: "+format+"\n", a...)
		fs.Usage()
		return errUsage
	}
	d, err := address.Domain(*domain)
	switch {
	case *domain == "":
		return bad("-domain is required")
	case err != nil || !address.IsHostname(d):
		return bad("-domain %q is not a domain name", *domain)
	case *selector == "" || !address.IsHostname(*selector):
		return bad("-selector %q: expect DNS labels such as mg2026", *selector)
	case *algorithm != dkimsign.RSASHA256 && *algorithm != dkimsign.Ed25519SHA256:
		return bad("-algorithm %q: expect %s or %s", *algorithm, dkimsign.RSASHA256, dkimsign.Ed25519SHA256)
	}
	bitsSet := false
	fs.Visit(func(f *flag.Flag) { bitsSet = bitsSet || f.Name == "bits" })
	if bitsSet && *algorithm != dkimsign.RSASHA256 {
		return bad("-bits is for rsa-sha256 keys; an Ed25519 key has a fixed size")
	}
	key, pemBytes, err := dkimsign.GenerateKey(*algorithm, *bits)
	if err != nil {
		return bad("%v", err)
	}
	record, err := dkimsign.KeyRecord(key.Public())
	if err != nil {
		return err
	}
	file := filepath.Join(*out, d+"."+*selector+".key")
	if err := writeNew(file, pemBytes); err != nil {
		return err
	}
	size := "Ed25519"
	if *algorithm == dkimsign.RSASHA256 {
		size = fmt.Sprintf("%d bits", *bits)
	}
	fmt.Fprintf(stdout, "; wrote %s (%s, %s); publish this record, then add the key to a dkim-sign stage:\n", file, *algorithm, size)
	fmt.Fprintln(stdout, dkimsign.ZoneLine(*selector, d, record))
	return nil
}

// writeNew writes a private key file readable by its owner only, and
// never over an existing file: a key replaced in place would no longer
// match the record published for it.
func writeNew(file string, data []byte) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists; choose another selector or remove the file", file)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(file)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(file)
		return err
	}
	return f.Close()
}
