// Command exeblock is a mailgate filter plugin that refuses mail carrying
// an executable: a part whose content, by its magic bytes, is a Windows
// (MZ/PE), Linux (ELF) or macOS (Mach-O) program, whatever its file name
// or Content-Type claim. See README.md.
//
// It is written as a third party would write it: against plugins/sdk and
// stages only.
package main

import "github.com/mailgate/mailgate/plugins/sdk"

func main() { sdk.Serve(New) }
