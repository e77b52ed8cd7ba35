package schedule

import (
	"fmt"
	"testing"
	"time"
)

var benchSink time.Time

// benchAfter spreads the after argument over about a year so that the
// benchmarks do not hit one cached zone period.
func benchAfter(i int) time.Time {
	return time.Unix(1767225600+int64(i%10007)*3137, 0) // from 2026-01-01
}

func benchNext(b *testing.B, f Frequency, zoneName string) {
	loc := zone(b, zoneName)
	b.Run("rule", func(b *testing.B) {
		r := compile(b, f)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			t, err := r.Next(loc, benchAfter(i))
			if err != nil {
				b.Fatal(err)
			}
			benchSink = t
		}
	})
	b.Run("frequency", func(b *testing.B) { // compiles on every call
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			t, err := f.Next(loc, benchAfter(i))
			if err != nil {
				b.Fatal(err)
			}
			benchSink = t
		}
	})
}

func BenchmarkNextDaily(b *testing.B) { benchNext(b, daily("02:30"), zBerlin) }

func BenchmarkNextCron(b *testing.B) {
	for _, e := range []string{"*/15 * * * *", "0 2 * * 1-5", "30 4 1 * *", "0 0 29 2 *"} {
		b.Run(e, func(b *testing.B) { benchNext(b, cron(e), zNewYork) })
	}
}

// BenchmarkNext10000 computes the next run of 10,000 compiled schedules of
// mixed kinds across zones, as a scheduler loop would.
func BenchmarkNext10000(b *testing.B) {
	freqs := []Frequency{
		daily("02:30"), daily("00:00"), weekly("sun", "03:00"), weekly("wed", "22:15"),
		monthly(1, "04:00"), monthly(31, "01:30"),
		cron("*/15 * * * *"), cron("0 2 * * *"), cron("0 9 * * mon-fri"), cron("30 4 1,15 * *"), cron("@weekly"),
	}
	type sched struct {
		r   Rule
		loc *time.Location
	}
	scheds := make([]sched, 10000)
	for i := range scheds {
		scheds[i] = sched{compile(b, freqs[i%len(freqs)]), zone(b, allZones[(i/len(freqs))%len(allZones)])}
	}
	now := time.Date(2026, 3, 8, 6, 30, 0, 0, time.UTC)
	b.ResetTimer()
	for b.Loop() {
		for i := range scheds {
			t, err := scheds[i].r.Next(scheds[i].loc, now.Add(time.Duration(i)*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			benchSink = t
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(scheds)), "ns/schedule")
}

func BenchmarkDue(b *testing.B) {
	loc := zone(b, zBerlin)
	r := compile(b, cron("*/15 * * * *"))
	st := State{LastSlot: time.Date(2026, 1, 1, 0, 0, 0, 0, loc)}
	for _, down := range []time.Duration{time.Hour, 30 * 24 * time.Hour} {
		b.Run(fmt.Sprint("down ", down), func(b *testing.B) {
			for b.Loop() {
				if _, err := r.Due(loc, st, st.LastSlot.Add(down), DefaultGrace); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
