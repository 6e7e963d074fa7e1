package redisconn

import (
	"strings"
	"testing"
)

// TestCheck: the URL forms README.md (Cluster) documents are taken, each
// as the client kind it names, and what is wrong with a URL is said
// without its password.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind kind
	}{
		{"redis://cache.example.test:6379/0", single},
		{"rediss://user:pw@cache.example.test:6380/3?skip_verify=true", single},
		{"unix:///run/redis/redis.sock?db=2", single},
		{"redis://s1:26379/0?master_name=mymaster&addr=s2:26379&addr=s3:26379", sentinel},
		{"redis://n1:6379?addr=n2:6379&addr=n3:6379", cluster},
		{"redis://n1:6379/0?cluster=true", cluster},
	} {
		p, err := parse(tc.url)
		if err != nil || p.kind != tc.kind {
			t.Errorf("parse(%q) = kind %d, %v; want kind %d", tc.url, p.kind, err, tc.kind)
		}
	}
	for _, tc := range []struct{ url, want string }{
		{"memcached://h:11211", `scheme "memcached"`},
		{"redis:///0", "no host"},
		{"redis://:s3cret@h:6379/x", "invalid database number"},
		{"redis://:s3cret@h:6379/0?master_name=", "empty master_name"},
		{"redis://:s3cret@h:6379/1?cluster=true", "only database 0"},
		{"redis://:s3cret@h:6379/0?cluster=yes", `cluster="yes"`},
		{"redis://:s3cret@h:6379/0?bogus=1", "unexpected option: bogus"},
		{"redis://:s3cret@h:6379/0\x7f", "not a URL"},
	} {
		err := Check(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Check(%q) = %v; want an error with %q and no password", tc.url, err, tc.want)
		}
	}
}
