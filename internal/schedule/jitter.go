package schedule

import "time"

// Jitter returns a delay in [0, max) derived only from scheduleID, so that
// many schedules with the same frequency spread out while each one keeps
// the same offset from run to run (and across restarts, hosts and
// versions: the hash below must not change). max <= 0 gives 0.
func Jitter(scheduleID string, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	// FNV-1a (64 bit) ...
	h := uint64(14695981039346656037)
	for i := 0; i < len(scheduleID); i++ {
		h ^= uint64(scheduleID[i])
		h *= 1099511628211
	}
	// ... then a SplitMix64-style finaliser, so that similar ids (sched-1,
	// sched-2) spread over the whole range.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return time.Duration(h % uint64(max))
}
