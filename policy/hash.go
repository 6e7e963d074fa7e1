package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Hash names what c asks of a node of a cluster, so that the nodes can
// tell whether they run the same config (mailgate cluster status). What
// belongs to one node is left out: hostname (and helo_name and
// bounce_from where they follow it), data_dir, [server] listen, [admin]
// listen and [cluster] node; so are the file's name, its comments and its
// layout. It is the hex SHA-256 of the rest, defaults filled in.
func (c *Config) Hash() string {
	own := *c
	own.File, own.DataDir, own.Hostname = "", "", ""
	own.Server.Listen, own.Admin.Listen, own.Cluster.Node = nil, "", ""
	if c.Delivery.HeloName == c.Hostname {
		own.Delivery.HeloName = ""
	}
	if c.Delivery.BounceFrom == "MAILER-DAEMON@"+c.Hostname {
		own.Delivery.BounceFrom = ""
	}
	own.Web.Listen = ""
	if c.Web.Digest.From == "quarantine@"+c.Hostname {
		own.Web.Digest.From = ""
	}
	// [stage.config] blocks are raw TOML in the struct: hashed as the
	// JSON their plugins get.
	confs := make([]string, len(c.Stages))
	for i := range c.Stages {
		b, err := c.StageConfigJSON(i)
		confs[i] = string(b)
		if err != nil {
			confs[i] = err.Error()
		}
	}
	b, err := json.Marshal(struct {
		Config       Config
		StageConfigs []string
	}{own, confs})
	if err != nil {
		return "unhashable: " + err.Error() // nothing in a Config fails to encode
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
