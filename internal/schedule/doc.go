// Package schedule holds the timing rules of cairn's schedules: when a
// frequency next runs in a time zone, what a scheduler that was down should
// do, and a stable per-schedule jitter. It is pure (no clock, no storage;
// the scheduler loop passes the times in) and uses the standard library only.
//
// # Frequencies
//
// A Frequency is daily at HH:MM, weekly on a weekday at HH:MM, monthly on a
// day (1-31) at HH:MM, or a 5-field cron expression. Times are local wall
// times in the schedule's IANA zone (LoadZone: "" is UTC, "Local" is
// refused). Validate/Normalize refuse unknown kinds, malformed values and
// fields that do not belong to the kind; Normalize returns the canonical
// form (weekday "sun".."sat", time "HH:MM"; "2:30" and "Sunday" are
// accepted on input). Compile returns a Rule to reuse for many Next calls.
//
// # Cron
//
// Fields: minute hour day-of-month month day-of-week. Each is a list of
// items: *, N, A-B, */S, A-B/S, A/S (A to the end of the field). Months
// jan-dec and weekdays sun-sat may be named in any case; day-of-week 7 is
// Sunday (in values and ranges; * and A/S stop at 6). Macros: @hourly,
// @daily, @midnight, @weekly, @monthly, @yearly, @annually. Day rule (Vixie
// cron): when neither day-of-month nor day-of-week starts with '*', a day
// matches if EITHER matches; otherwise both must. Refused, with the field
// and reason (*CronError): values out of range, reversed ranges, step 0 or a
// step wider than the field, empty items or fields, a field count other than
// 5 (6 or 7 fields, i.e. seconds/years, get their own message), Quartz
// extensions (? L W #), @reboot and @every, and expressions that can never
// fire (e.g. "0 0 30 2 *"). The never-fires check is exact and independent
// of the current date: only day-of-month x month can exclude every day,
// because each valid date falls on every weekday within the 400-year
// Gregorian cycle. Next still gives up (ErrNoRun) after 100 years; the
// longest real gap is 29 February on a given weekday, about 40 years.
// Cron keeps standard month semantics: day 31 fires only in months that
// have one (unlike monthly frequencies, below).
//
// # Next run
//
// Next(loc, after) is the first run strictly after after. Every wall time
// maps to one instant, the first at which loc's clock reaches it:
//
//   - A wall time that does not exist (spring forward) runs at the end of the
//     gap: 02:30 on the New York DST start day runs at 03:00 EDT (07:00 UTC).
//     time.Date is not trusted for these (it may pick either offset); gaps
//     are found from the zone's periods (ZoneBounds).
//   - A wall time that occurs twice (fall back) runs once, at its first
//     occurrence (the earlier instant, still on daylight time).
//   - Cron: each matching wall minute maps the same way. Several matching
//     minutes in one gap collapse into one run at the end of the gap (also
//     shared with a match at that very minute); minutes of the repeated hour
//     do not run again on the second pass. Runs are strictly increasing.
//   - Monthly on a day the month lacks (31 in April, 29-31 in February) runs
//     on the month's last day.
//
// The search starts just past the latest wall time the clock has shown up
// to after (past the first pass of a repeated hour, too). Daily, weekly and
// monthly rules compute the candidate day directly; cron walks matching
// months and days, then the matching hours and minutes of a day, never
// minute by minute over long spans. Wall times are plain integers (civil.go).
//
// # Missed slots
//
// Due(f, loc, State{Created, LastSlot}, now, grace) looks at the slots in
// (LastSlot, now] (from Created when LastSlot is zero). At most the latest
// runs, and only if it is within grace of now (DefaultGrace, 6h); all others
// are counted in Missed, never run in a burst. The caller stores
// Decision.Slot as LastSlot whether it ran or not.
//
// # Jitter
//
// Jitter(id, max) is a stable offset in [0, max) from a hash of the schedule
// id (FNV-1a with a SplitMix64 finaliser); it must not change between
// versions, and the tests pin it.
package schedule
