package stages

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written with its unit: "5s", "2m30s".
type Duration time.Duration

// DurationExample is what a config error says a duration looks like.
const DurationExample = `a duration with a unit such as "30s", "5m" or "1h30m"`

func (d Duration) String() string { return time.Duration(d).String() }

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	switch {
	case err != nil:
		return fmt.Errorf("unexpected %q; expect %s", b, DurationExample)
	case v < 0:
		return fmt.Errorf(`unexpected %q; expect a positive duration such as "30s"`, b)
	}
	*d = Duration(v)
	return nil
}

// Size is a byte count written with its unit: "50MB", "512KiB", "1GiB",
// "100B". KB, MB and GB are powers of 1000; KiB, MiB and GiB powers of
// 1024. A number without a unit is refused rather than taken as bytes:
// max_message_size = 50 is far more often a slip than a wish for 50 bytes.
type Size int64

// SizeExample is what a config error says a size looks like.
const SizeExample = `a size with a unit: "50MB", "512KiB" (B, KB, MB, GB, KiB, MiB or GiB)`

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000},
	{"B", 1},
}

// String writes the size with the largest unit that divides it exactly,
// so that it reads back as the same size: "50MB", "1KiB", "1500B".
func (s Size) String() string {
	if s != 0 {
		for _, u := range []string{"GiB", "GB", "MiB", "MB", "KiB", "KB"} {
			m := unitMult(u)
			if s%Size(m) == 0 {
				return strconv.FormatInt(int64(s)/m, 10) + u
			}
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

func unitMult(suffix string) int64 {
	for _, u := range sizeUnits {
		if u.suffix == suffix {
			return u.mult
		}
	}
	return 1
}

func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *Size) UnmarshalText(b []byte) error {
	str := strings.TrimSpace(string(b))
	mult := int64(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(str, u.suffix) {
			str, mult = strings.TrimSpace(strings.TrimSuffix(str, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(str, 10, 64)
	if err != nil || mult == 0 || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("unexpected %q; expect %s", b, SizeExample)
	}
	*s = Size(n * mult)
	return nil
}
