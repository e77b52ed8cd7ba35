package benchdata

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
)

// The text regions: sentences of words from a fixed vocabulary of generated
// pseudo-words. A sentence's first word, and one word in ten after it, is
// drawn with Zipf-Mandelbrot frequencies (rank r has weight
// 1/(r+zipfQ)^zipfS; the most frequent words are the shortest, as in
// English); the other words are one of the few that usually follow the word
// before, so word pairs and short phrases recur, as in real prose. zstd at
// level 3 shrinks this text about 3.3x (gzip 3.2x, xz 4.8x): neither
// incompressible nor trivially repetitive.
const (
	vocabSize   = 4096
	vocabSeed   = 0x636169726e766f63 // fixed: every image has the same vocabulary
	zipfS       = 1.05
	zipfQ       = 2.7
	tableBits   = 16   // pick has 2^16 entries, indexed by a uint16
	syllables   = 1.6  // mean of the exponential draw of a word's syllables past the first (at most 4 in all)
	followers   = 4    // the words that usually follow each word
	followPct   = 90   // how often (%) the next word is one of them
	maxSentence = 1024 // longer than any sentence appendText writes
)

var (
	onsets = []string{"b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
		"ch", "sh", "th", "st", "br", "tr", "pl", "gr", "cl", "fr", "sp", "wh", ""}
	vowels = []string{"a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou", "io", "ee", "y"}
	codas  = []string{"", "", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "rt", "ck", "th"}
)

type vocabulary struct {
	words [][]byte
	// next lists, for each word, the words that often follow it.
	next [][followers]uint16
	// pick maps a uniform tableBits-bit number to a word index: word r fills
	// about weight(r) * 2^tableBits consecutive slots (every word at least one).
	pick []uint16
}

var vocab = sync.OnceValue(buildVocabulary)

func buildVocabulary() *vocabulary {
	r := rand.New(rand.NewPCG(vocabSeed, vocabSeed))
	seen := make(map[string]bool, vocabSize)
	words := make([]string, 0, vocabSize)
	for len(words) < vocabSize {
		// 1 to 4 syllables, shorter words more often.
		syl := 1 + min(int(r.ExpFloat64()*syllables), 3)
		w := ""
		for range syl {
			w += onsets[r.IntN(len(onsets))] + vowels[r.IntN(len(vowels))]
			if r.IntN(3) == 0 {
				w += codas[r.IntN(len(codas))]
			}
		}
		if !seen[w] {
			seen[w] = true
			words = append(words, w)
		}
	}
	// The most frequent ranks get the shortest words.
	slices.SortStableFunc(words, func(a, b string) int { return len(a) - len(b) })

	v := &vocabulary{words: make([][]byte, vocabSize), pick: make([]uint16, 1<<tableBits)}
	for i, w := range words {
		v.words[i] = []byte(w)
	}
	weights := make([]float64, vocabSize)
	total := 0.0
	for i := range weights {
		weights[i] = 1 / math.Pow(float64(i)+zipfQ, zipfS)
		total += weights[i]
	}
	// Give each word its share of the table, at least one slot; the rounding
	// surplus or deficit goes to the most frequent word.
	slots := len(v.pick)
	counts := make([]int, vocabSize)
	used := 0
	for i, w := range weights {
		counts[i] = max(1, int(math.Round(w/total*float64(slots))))
		used += counts[i]
	}
	counts[0] += slots - used
	at := 0
	for i, c := range counts {
		for range c {
			v.pick[at] = uint16(i)
			at++
		}
	}
	v.next = make([][followers]uint16, vocabSize)
	for i := range v.next {
		for j := range followers {
			v.next[i][j] = v.pick[r.IntN(len(v.pick))]
		}
	}
	return v
}

// appendText appends exactly n bytes of pseudo-English to buf, drawn from pcg.
func appendText(buf []byte, n int, pcg *rand.PCG) []byte {
	v := vocab()
	start := len(buf)
	end := start + n
	for len(buf) < end {
		x := pcg.Uint64()
		words := 4 + int(x%16)             // 4 to 19 words
		lineEnd := uint16(x>>8)%5 == 0     // one sentence in five ends its line
		paragraph := uint16(x>>24)%25 == 0 // one in 25 its paragraph
		question := uint16(x>>40)%12 == 0  // one in 12 is a question
		prev := -1
		for w := range words {
			y := pcg.Uint64()
			idx := int(v.pick[uint16(y)])
			if prev >= 0 && uint32(y>>16)%100 < followPct {
				idx = int(v.next[prev][(y>>48)%followers])
			}
			prev = idx
			word := v.words[idx]
			s := len(buf)
			buf = append(buf, word...)
			if w == 0 && buf[s] >= 'a' && buf[s] <= 'z' {
				buf[s] -= 'a' - 'A'
			}
			if w == words-1 {
				break
			}
			if uint8(y>>56)%14 == 0 { // a comma after one word in 14
				buf = append(buf, ',')
			}
			buf = append(buf, ' ')
		}
		if question {
			buf = append(buf, '?')
		} else {
			buf = append(buf, '.')
		}
		switch {
		case paragraph:
			buf = append(buf, '\n', '\n')
		case lineEnd:
			buf = append(buf, '\n')
		default:
			buf = append(buf, ' ')
		}
	}
	return buf[:end]
}
