package schedule

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func bitList(mask uint64) []int {
	var out []int
	for b := nextBit(mask, 0); b >= 0; b = nextBit(mask, b+1) {
		out = append(out, b)
	}
	return out
}

func span(lo, hi, step int) []int {
	var out []int
	for v := lo; v <= hi; v += step {
		out = append(out, v)
	}
	return out
}

func TestParseCronFields(t *testing.T) {
	type want struct {
		minute, hour, dom, month, dow []int
		domStar, dowStar              bool
	}
	all := func(lo, hi int) []int { return span(lo, hi, 1) }
	cases := []struct {
		expr string
		w    want
	}{
		{"* * * * *", want{all(0, 59), all(0, 23), all(1, 31), all(1, 12), all(0, 6), true, true}},
		{"*/15 */6 */10 */3 */2", want{[]int{0, 15, 30, 45}, []int{0, 6, 12, 18}, []int{1, 11, 21, 31}, []int{1, 4, 7, 10}, []int{0, 2, 4, 6}, true, true}},
		{"1-10/3 5-7 1,15,31 2-4 1-5", want{[]int{1, 4, 7, 10}, []int{5, 6, 7}, []int{1, 15, 31}, []int{2, 3, 4}, all(1, 5), false, false}},
		{"5/20 22/1 28/2 11/1 5/1", want{[]int{5, 25, 45}, []int{22, 23}, []int{28, 30}, []int{11, 12}, []int{5, 6}, false, false}},
		{"0 0 * JAN,jul,Dec mon-FRI", want{[]int{0}, []int{0}, all(1, 31), []int{1, 7, 12}, all(1, 5), true, false}},
		{"0 0 * feb-apr/2 sat,sun", want{[]int{0}, []int{0}, all(1, 31), []int{2, 4}, []int{0, 6}, true, false}},
		{"0 0 * JUL,APR WED,SAT", want{[]int{0}, []int{0}, all(1, 31), []int{4, 7}, []int{3, 6}, true, false}},
		{"0 0 * * 7", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), []int{0}, true, false}},
		{"0 0 * * 5-7", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), []int{0, 5, 6}, true, false}},
		{"0 0 * * 0-7", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), all(0, 6), true, false}},
		{"0 0 * * fri-7", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), []int{0, 5, 6}, true, false}},
		{"0,30 9-17 * * *", want{[]int{0, 30}, all(9, 17), all(1, 31), all(1, 12), all(0, 6), true, true}},
		{"59 23 31 12 6", want{[]int{59}, []int{23}, []int{31}, []int{12}, []int{6}, false, false}},
		{"*/60 * * * *", want{[]int{0}, all(0, 23), all(1, 31), all(1, 12), all(0, 6), true, true}},
		{"0 0 *,15 * *", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), all(0, 6), true, true}},
		{"\t0  0 1 1 *\n", want{[]int{0}, []int{0}, []int{1}, []int{1}, all(0, 6), false, true}},
		{"@yearly", want{[]int{0}, []int{0}, []int{1}, []int{1}, all(0, 6), false, true}},
		{"@annually", want{[]int{0}, []int{0}, []int{1}, []int{1}, all(0, 6), false, true}},
		{"@monthly", want{[]int{0}, []int{0}, []int{1}, all(1, 12), all(0, 6), false, true}},
		{"@weekly", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), []int{0}, true, false}},
		{"@daily", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), all(0, 6), true, true}},
		{"@MIDNIGHT", want{[]int{0}, []int{0}, all(1, 31), all(1, 12), all(0, 6), true, true}},
		{"@hourly", want{[]int{0}, all(0, 23), all(1, 31), all(1, 12), all(0, 6), true, true}},
	}
	for _, c := range cases {
		s, err := parseCron(c.expr)
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		got := want{bitList(s.minute), bitList(s.hour), bitList(s.dom), bitList(s.month), bitList(s.dow), s.domStar, s.dowStar}
		if fmt.Sprint(got) != fmt.Sprint(c.w) {
			t.Errorf("%q:\n got %v\nwant %v", c.expr, got, c.w)
		}
	}
}

func TestParseCronRejects(t *testing.T) {
	cases := []struct {
		expr  string
		field string // "" when the error is not about one field
		frag  []string
	}{
		{"", "", []string{"empty expression"}},
		{"   ", "", []string{"empty expression"}},
		{"* * * *", "", []string{"4 field(s)", "want 5"}},
		{"* * * * * * * *", "", []string{"8 field(s)"}},
		{"0 */5 * * * *", "", []string{"6 fields", "seconds", "minute hour day-of-month month day-of-week"}},
		{"0 0 12 * * ? 2030", "", []string{"7 fields", "seconds and year"}},
		{"60 * * * *", "minute", []string{"value 60 is out of range 0-59"}},
		{"* 24 * * *", "hour", []string{"value 24 is out of range 0-23"}},
		{"* * 0 * *", "day-of-month", []string{"value 0 is out of range 1-31"}},
		{"* * 32 * *", "day-of-month", []string{"out of range 1-31"}},
		{"* * * 13 *", "month", []string{"value 13 is out of range 1-12"}},
		{"* * * 0 *", "month", []string{"out of range 1-12"}},
		{"* * * * 8", "day-of-week", []string{"value 8 is out of range 0-7"}},
		{"99999999999999999999 * * * *", "minute", []string{"value 99999999999999999999 is out of range"}},
		{"5-2 * * * *", "minute", []string{`range "5-2" is reversed`}},
		{"* * * * fri-mon", "day-of-week", []string{`range "fri-mon" is reversed`}},
		{"* * * dec-jan *", "month", []string{"reversed"}},
		{"*/0 * * * *", "minute", []string{"step 0"}},
		{"1-5/0 * * * *", "minute", []string{"step 0"}},
		{"*/61 * * * *", "minute", []string{"step 61 is larger than the field's range 0-59"}},
		{"* */25 * * *", "hour", []string{"step 25"}},
		{"*/ * * * *", "minute", []string{"missing step"}},
		{"*/x * * * *", "minute", []string{`step "x" is not a number`}},
		{"*/1/2 * * * *", "minute", []string{`"1/2" is not a number`}},
		{",5 * * * *", "minute", []string{"empty list item"}},
		{"1,,2 * * * *", "minute", []string{"empty list item"}},
		{"1, * * * *", "minute", []string{"empty list item"}},
		{"/5 * * * *", "minute", []string{"missing value"}},
		{"1- * * * *", "minute", []string{"missing value"}},
		{"-1 * * * *", "minute", []string{"missing value"}},
		{"1-2-3 * * * *", "minute", []string{`"2-3"`}},
		{"jan * * * *", "minute", []string{`"jan" is not a number (0-59)`}},
		{"* * * janu *", "month", []string{`"janu" is neither a number (1-12) nor a name (jan-dec)`}},
		{"* * * * monday", "day-of-week", []string{`"monday"`, "(sun-sat)"}},
		{"* * ? * *", "day-of-month", []string{"not supported"}},
		{"* * L * *", "day-of-month", []string{"not supported"}},
		{"* * 15W * *", "day-of-month", []string{"not supported"}},
		{"* * * * 5#3", "day-of-week", []string{"not supported"}},
		{"+5 * * * *", "minute", []string{`"+5" is not a number`}},
		{"0 0 30 2 *", "", []string{"never runs", `"2"`, `"30"`}},
		{"0 0 31 4,6,9,11 *", "", []string{"never runs"}},
		{"0 0 30,31 feb *", "", []string{"never runs"}},
		{"0 0 30 2 */2", "", []string{"never runs"}},
		{"@fortnightly", "", []string{`unknown macro "@fortnightly"`, "@hourly"}},
		{"@reboot", "", []string{"@reboot is not a time schedule"}},
		{"@every 5m", "", []string{"@every is not supported"}},
		{"@daily extra", "", []string{"unknown macro"}},
	}
	for _, c := range cases {
		s, err := parseCron(c.expr)
		if s != nil {
			t.Errorf("%q: parsed", c.expr)
		}
		wantErr(t, fmt.Sprintf("%q", c.expr), err, c.frag...)
		var ce *CronError
		if !errors.As(err, &ce) {
			t.Errorf("%q: error %T is not a *CronError", c.expr, err)
			continue
		}
		if ce.Field != c.field || ce.Expr != c.expr {
			t.Errorf("%q: error field %q expr %q; want %q", c.expr, ce.Field, ce.Expr, c.field)
		}
	}
}

// Expressions that fire rarely are accepted; only those that never fire are
// refused.
func TestParseCronRareButPossible(t *testing.T) {
	for _, e := range []string{"0 0 29 2 *", "0 0 31 * *", "0 0 30 2 1", "0 0 29 2 */7", "0 0 31 1-12/5 *"} {
		if _, err := parseCron(e); err != nil {
			t.Errorf("%q: %v", e, err)
		}
	}
}

func TestDayMatches(t *testing.T) {
	// 2026-02-13 is a Friday (wd 5); 2026-02-14 a Saturday.
	cases := []struct {
		expr string
		d    int
		wd   int
		want bool
	}{
		{"0 0 13 * 5", 13, 5, true}, // both
		{"0 0 13 * 5", 6, 5, true},  // OR: weekday alone
		{"0 0 13 * 5", 13, 2, true}, // OR: day alone
		{"0 0 13 * 5", 14, 6, false},
		{"0 0 13 * *", 14, 5, false},
		{"0 0 * * 5", 13, 4, false},
		{"0 0 */2 * 5", 13, 5, true}, // '*' prefix: AND
		{"0 0 */2 * 5", 13, 4, false},
		{"0 0 */2 * 5", 14, 5, false},
		{"0 0 13 * */7", 13, 5, false}, // AND with Sundays only
		{"0 0 13 * */7", 13, 0, true},
	}
	for _, c := range cases {
		s, err := parseCron(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.dayMatches(c.d, c.wd); got != c.want {
			t.Errorf("%q day %d weekday %d: %v, want %v", c.expr, c.d, c.wd, got, c.want)
		}
	}
}

func TestNextBit(t *testing.T) {
	if got := bitList(1<<0 | 1<<5 | 1<<63); !slices.Equal(got, []int{0, 5, 63}) {
		t.Errorf("bitList = %v", got)
	}
	if nextBit(1<<5, 6) != -1 || nextBit(1<<5, 64) != -1 || nextBit(1<<5, 5) != 5 {
		t.Error("nextBit")
	}
}
