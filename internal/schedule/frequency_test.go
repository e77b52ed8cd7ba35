package schedule

import (
	"encoding/json"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := []Frequency{
		daily("00:00"), daily("23:59"), daily("2:30"),
		weekly("sun", "03:00"), weekly("Sunday", "03:00"), weekly("SAT", "23:59"), weekly("wednesday", "12:00"),
		monthly(1, "04:00"), monthly(31, "04:00"),
		cron("*/15 * * * *"), cron("@daily"), cron("  0 2 * * *  "),
		{Kind: "Daily", Time: "01:00"},
	}
	for _, f := range ok {
		if err := f.Validate(); err != nil {
			t.Errorf("%+v: %v", f, err)
		}
	}
	bad := []struct {
		f    Frequency
		frag []string
	}{
		{Frequency{}, []string{"kind is missing"}},
		{Frequency{Kind: "hourly", Time: "01:00"}, []string{`unknown frequency kind "hourly"`, "daily, weekly, monthly or cron"}},
		{daily(""), []string{"needs a time"}},
		{daily("24:00"), []string{`"24:00"`, "HH:MM", "00:00-23:59"}},
		{daily("12:60"), []string{`"12:60"`}},
		{daily("12:5"), []string{`"12:5"`}},
		{daily("123:00"), []string{`"123:00"`}},
		{daily("-1:00"), []string{`"-1:00"`}},
		{daily("12.30"), []string{`"12.30"`}},
		{daily(" 12:30"), []string{`" 12:30"`}},
		{weekly("", "03:00"), []string{"needs a weekday"}},
		{weekly("sonntag", "03:00"), []string{`weekday "sonntag"`, "sun, mon, tue, wed, thu, fri, sat"}},
		{weekly("su", "03:00"), []string{`weekday "su"`}},
		{monthly(0, "04:00"), []string{"needs a day"}},
		{monthly(32, "04:00"), []string{"day 32", "1-31"}},
		{monthly(-1, "04:00"), []string{"day -1", "1-31"}},
		{monthly(1, ""), []string{"needs a time"}},
		{Frequency{Kind: "daily", Time: "02:30", Weekday: "sun"}, []string{"daily", `does not take "weekday"`}},
		{Frequency{Kind: "daily", Time: "02:30", Day: 3}, []string{"daily", `does not take "day"`}},
		{Frequency{Kind: "daily", Time: "02:30", Expr: "* * * * *"}, []string{"daily", `does not take "expr"`}},
		{Frequency{Kind: "weekly", Weekday: "sun", Time: "02:30", Day: 3}, []string{"weekly", `"day"`}},
		{Frequency{Kind: "monthly", Day: 3, Time: "02:30", Weekday: "sun"}, []string{"monthly", `"weekday"`}},
		{Frequency{Kind: "cron", Expr: "* * * * *", Time: "02:30"}, []string{"cron", `"time"`}},
		{Frequency{Kind: "cron", Expr: "* * * * *", Weekday: "sun"}, []string{"cron", `"weekday"`}},
		{Frequency{Kind: "cron", Expr: "* * * * *", Day: 1}, []string{"cron", `"day"`}},
		{cron(""), []string{"needs an expression"}},
		{cron("61 * * * *"), []string{"minute field", `"61"`, "out of range 0-59"}},
		{cron("0 0 30 2 *"), []string{"never runs"}},
	}
	for _, c := range bad {
		wantErr(t, c.f.String(), c.f.Validate(), c.frag...)
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct{ in, want Frequency }{
		{Frequency{Kind: "DAILY", Time: "2:30"}, daily("02:30")},
		{weekly("Sunday", "3:00"), weekly("sun", "03:00")},
		{weekly("THU", "03:00"), weekly("thu", "03:00")},
		{monthly(31, "04:00"), monthly(31, "04:00")},
		{cron("  @Daily "), cron("@Daily")},
	}
	for _, c := range cases {
		got, err := c.in.Normalize()
		if err != nil || got != c.want {
			t.Errorf("Normalize(%+v) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	if _, err := daily("25:00").Normalize(); err == nil {
		t.Error("Normalize accepted 25:00")
	}
}

func TestParseHelpers(t *testing.T) {
	good := []struct {
		kind, value string
		want        Frequency
	}{
		{"daily", "02:30", daily("02:30")},
		{"daily", " 2:30 ", daily("02:30")},
		{"weekly", "sun 03:00", weekly("sun", "03:00")},
		{"weekly", "Friday  23:15", weekly("fri", "23:15")},
		{"monthly", "1 04:00", monthly(1, "04:00")},
		{"monthly", "31 4:00", monthly(31, "04:00")},
		{"cron", "*/15 * * * *", cron("*/15 * * * *")},
		{"CRON", "@hourly", cron("@hourly")},
	}
	for _, c := range good {
		got, err := Parse(c.kind, c.value)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q, %q) = %+v, %v; want %+v", c.kind, c.value, got, err, c.want)
		}
	}
	if f, err := ParseDaily("02:30"); err != nil || f != daily("02:30") {
		t.Errorf("ParseDaily: %+v %v", f, err)
	}
	if f, err := ParseWeekly("sun 03:00"); err != nil || f != weekly("sun", "03:00") {
		t.Errorf("ParseWeekly: %+v %v", f, err)
	}
	if f, err := ParseMonthly("1 04:00"); err != nil || f != monthly(1, "04:00") {
		t.Errorf("ParseMonthly: %+v %v", f, err)
	}
	if f, err := ParseCron("0 2 * * *"); err != nil || f != cron("0 2 * * *") {
		t.Errorf("ParseCron: %+v %v", f, err)
	}
	bad := []struct {
		kind, value string
		frag        []string
	}{
		{"daily", "2:30pm", []string{`"2:30pm"`, "HH:MM"}},
		{"weekly", "sun", []string{"WEEKDAY HH:MM"}},
		{"weekly", "03:00 sun", []string{`weekday "03:00"`}},
		{"weekly", "sun 03:00 extra", []string{"WEEKDAY HH:MM"}},
		{"monthly", "04:00", []string{"DAY HH:MM"}},
		{"monthly", "0 04:00", []string{`day "0"`, "1-31"}},
		{"monthly", "x 04:00", []string{`day "x"`}},
		{"monthly", "99999999999999999999 04:00", []string{"1-31"}},
		{"cron", "* * * *", []string{"4 field(s)", "want 5"}},
		{"hourly", "5", []string{`unknown frequency kind "hourly"`}},
	}
	for _, c := range bad {
		_, err := Parse(c.kind, c.value)
		wantErr(t, c.kind+" "+c.value, err, c.frag...)
	}
}

func TestFrequencyJSON(t *testing.T) {
	cases := []struct {
		json string
		f    Frequency
	}{
		{`{"kind":"daily","time":"02:30"}`, daily("02:30")},
		{`{"kind":"weekly","time":"03:00","weekday":"sun"}`, weekly("sun", "03:00")},
		{`{"kind":"monthly","time":"04:00","day":1}`, monthly(1, "04:00")},
		{`{"kind":"cron","expr":"*/15 * * * *"}`, cron("*/15 * * * *")},
	}
	for _, c := range cases {
		b, err := json.Marshal(c.f)
		if err != nil || string(b) != c.json {
			t.Errorf("Marshal(%+v) = %s, %v; want %s", c.f, b, err, c.json)
		}
		var f Frequency
		if err := json.Unmarshal([]byte(c.json), &f); err != nil || f != c.f {
			t.Errorf("Unmarshal(%s) = %+v, %v", c.json, f, err)
		}
		if err := f.Validate(); err != nil {
			t.Errorf("%s: %v", c.json, err)
		}
	}
}

func TestString(t *testing.T) {
	cases := map[Frequency]string{
		daily("2:30"):             "daily at 02:30",
		weekly("Sunday", "03:00"): "weekly on sun at 03:00",
		monthly(1, "04:00"):       "monthly on day 1 at 04:00",
		cron("*/15 * * * *"):      "cron */15 * * * *",
	}
	for f, want := range cases {
		if got := f.String(); got != want {
			t.Errorf("%+v: String() = %q, want %q", f, got, want)
		}
	}
}

func TestLoadZone(t *testing.T) {
	for _, name := range []string{"", "UTC"} {
		if loc, err := LoadZone(name); err != nil || loc != time.UTC {
			t.Errorf("LoadZone(%q) = %v, %v; want UTC", name, loc, err)
		}
	}
	a, err := LoadZone(zBerlin)
	if err != nil || a.String() != zBerlin {
		t.Fatalf("LoadZone(%q) = %v, %v", zBerlin, a, err)
	}
	if b, _ := LoadZone(zBerlin); b != a {
		t.Error("LoadZone does not cache")
	}
	_, err = LoadZone("Local")
	wantErr(t, "Local", err, `"Local" is not allowed`, "IANA")
	_, err = LoadZone("Mars/Olympus_Mons")
	wantErr(t, "unknown", err, `unknown time zone "Mars/Olympus_Mons"`, "IANA")
	_, err = LoadZone("../etc/passwd")
	wantErr(t, "path", err, "unknown time zone")
}
