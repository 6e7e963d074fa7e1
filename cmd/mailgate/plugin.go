package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/mailgate/mailgate/plugins/sdk"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// builtinKinds are the stage kinds this binary serves with `mailgate plugin
// KIND`. It is built on demand rather than kept in a package variable, so
// there is no registry state to share.
func builtinKinds() map[string]stages.Factory {
	return map[string]stages.Factory{}
}

func kindNames() string {
	var names []string
	for k := range builtinKinds() {
		names = append(names, k)
	}
	names = append(names, "plugin")
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// cmdPlugin serves one built-in kind over the plugin protocol. The gateway
// starts it; a person running it by hand gets go-plugin's explanation.
func cmdPlugin(args []string, stderr io.Writer) error {
	if len(args) != 1 {
		fmt.Fprintf(stderr, "usage: mailgate plugin KIND (one of %s)\n", kindNames())
		return errUsage
	}
	f, ok := builtinKinds()[args[0]]
	if !ok {
		return fmt.Errorf("unknown kind %q; expect one of %s", args[0], kindNames())
	}
	sdk.Serve(f)
	return nil
}

// checkStages validates what policy cannot: that every kind exists.
func checkStages(cfg *policy.Config) error {
	kinds := builtinKinds()
	var errs []error
	for i, st := range cfg.Stages {
		if _, ok := kinds[st.Kind]; !ok && st.Kind != "plugin" {
			errs = append(errs, fmt.Errorf("%s: stage[%d].kind: unexpected %q; expect %s",
				cfg.Position(fmt.Sprintf("stage.%d.kind", i)), i, st.Kind, kindNames()))
		}
	}
	return errors.Join(errs...)
}
