package milter

import (
	"slices"
	"strconv"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages"
)

// defaultMacros are the macros sent at each step unless the milter asks
// for others (SMFIF_SETSYMLIST): Postfix's milter_*_macros defaults
// (postconf -d), less those the gateway has no value for, plus the client
// macros Postfix also defines.
var defaultMacros = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"j", "{daemon_name}", "v", "_", "{client_addr}", "{client_port}", "{client_name}"},
	gomilter.StageHelo:     {"{tls_version}", "{cipher}"},
	gomilter.StageMailFrom: {"i", "{auth_type}", "{auth_authen}", "{mail_addr}"},
	gomilter.StageRcptTo:   {"i", "{rcpt_addr}"},
	gomilter.StageData:     {"i"},
	gomilter.StageEOH:      {"i"},
	gomilter.StageEOM:      {"i"},
}

// macroStage returns the step an override for name is sent at: the step
// whose defaults name it, else the connect step, whose macros the milter
// keeps for the whole session.
func macroStage(name string) gomilter.Stage {
	for st, names := range defaultMacros {
		if slices.Contains(names, name) {
			return st
		}
	}
	return gomilter.StageConnect
}

// macros returns name and value pairs for step st. rcpt is the recipient
// of the RCPT step.
func (m *Milter) macros(s *session, st gomilter.Stage, tx *stages.Transaction, rcpt string) []string {
	names, asked := s.symlist[st]
	if !asked {
		names = slices.Clone(defaultMacros[st])
		for name := range m.overrides {
			if macroStage(name) == st && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
		slices.Sort(names[len(defaultMacros[st]):])
	}
	var kv []string
	for _, name := range names {
		if v := m.macro(name, tx, rcpt); v != "" {
			kv = append(kv, name, v)
		}
	}
	return kv
}

// macro returns the value of one macro, "" when it has none. {auth_*}
// macros exist only for an authenticated client, overrides included, so
// that a configured {auth_type} never makes a stranger look authenticated.
func (m *Milter) macro(name string, tx *stages.Transaction, rcpt string) string {
	c := tx.Client
	if strings.HasPrefix(name, "{auth_") && c.AuthUser == "" {
		return ""
	}
	if v, ok := m.overrides[name]; ok {
		return v
	}
	addr := ""
	if c.Addr.IsValid() {
		addr = c.Addr.Unmap().String()
	}
	clientName := c.Name
	if clientName == "" {
		clientName = "unknown"
	}
	switch name {
	case "j", "{daemon_name}":
		return m.env.Hostname
	case "v":
		return "mailgate"
	case "_":
		return clientName + " [" + addr + "]"
	case "{client_addr}":
		return addr
	case "{client_port}":
		if c.Port == 0 {
			return ""
		}
		return strconv.Itoa(int(c.Port))
	case "{client_name}":
		return clientName
	case "{tls_version}":
		v, _ := tlsMacros(c.TLS)
		return v
	case "{cipher}":
		_, cipher := tlsMacros(c.TLS)
		return cipher
	case "i":
		return tx.QueueID
	case "{auth_authen}":
		return c.AuthUser
	case "{mail_addr}":
		return tx.From
	case "{rcpt_addr}":
		return rcpt
	}
	return ""
}

// tlsMacros splits the gateway's TLS description ("TLS 1.3 with cipher
// TLS_AES_128_GCM_SHA256") into {tls_version} in OpenSSL's spelling
// ("TLSv1.3"), which milters compare against, and {cipher}.
func tlsMacros(desc string) (version, cipher string) {
	if desc == "" {
		return "", ""
	}
	version, cipher, ok := strings.Cut(desc, " with cipher ")
	if !ok {
		// The older form "TLS1.3 TLS_AES_128_GCM_SHA256".
		version, cipher, _ = strings.Cut(desc, " ")
	}
	if n, ok := strings.CutPrefix(strings.ReplaceAll(version, " ", ""), "TLS"); ok {
		version = "TLSv" + n
	}
	return version, strings.TrimSpace(cipher)
}

// connectInfo returns the data of SMFIC_CONNECT: the client's host name
// ("[addr]" when it has no verified name, as sendmail sends it), the
// address family, port and address.
func connectInfo(c stages.Client) []byte {
	addr := c.Addr.Unmap()
	host := c.Name
	if host == "" && addr.IsValid() {
		host = "[" + addr.String() + "]"
	}
	if host == "" {
		host = "unknown"
	}
	b := cstrings(host)
	switch {
	case addr.Is4():
		b = append(b, byte(gomilter.FamilyInet))
	case addr.Is6():
		b = append(b, byte(gomilter.FamilyInet6))
	default:
		return append(b, byte(gomilter.FamilyUnknown))
	}
	b = append(b, byte(c.Port>>8), byte(c.Port))
	return append(b, cstrings(addr.String())...)
}
