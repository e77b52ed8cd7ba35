package core

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "db", "web-1", "x.y_z", "0abc", strings.Repeat("a", 63)} {
		if err := CheckName("volume", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "-a", ".a", "a b", "a/b", "é", strings.Repeat("a", 64), "0b0f5d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"} {
		err := CheckName("volume", bad)
		if err == nil || KindOf(err) != KindInvalid || !strings.Contains(err.Error(), "volume name") {
			t.Errorf("%q: %v, want an invalid-name error", bad, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	cases := map[string]int64{
		"512": 512, "64K": 64 << 10, "64KiB": 64 << 10, "10G": 10 << 30, "10g": 10 << 30, "1.5M": 3 << 19,
		"2T": 2 << 40, " 4M ": 4 << 20, "1GB": 1 << 30,
	}
	for in, want := range cases {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1G", "abc", "1.1", "100", "1X", "65T", "NaN", "Inf", "1e400"} {
		if _, err := ParseSize(bad); err == nil || KindOf(err) != KindInvalid {
			t.Errorf("ParseSize(%q) accepted or wrong kind: %v", bad, err)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 512: "512 B", 1 << 10: "1 KiB", 3 << 19: "1.5 MiB", 10 << 30: "10 GiB", 2 << 40: "2 TiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10G", "1.5M", "512", "", "-1", "1e9", "64KiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if KindOf(err) != KindInvalid {
				t.Fatalf("ParseSize(%q): error of kind %v", s, KindOf(err))
			}
			return
		}
		if n <= 0 || n%512 != 0 || n > MaxVolumeSize {
			t.Fatalf("ParseSize(%q) = %d: not a positive multiple of 512 within the limit", s, n)
		}
	})
}

func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a", "web-1", "", "A", "0b0f5d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckName("volume", s) != nil {
			return
		}
		if len(s) == 0 || len(s) > 63 || IsUUID(s) {
			t.Fatalf("CheckName accepted %q", s)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				t.Fatalf("CheckName accepted %q with %q", s, r)
			}
		}
	})
}
