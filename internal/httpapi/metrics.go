package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/service"
)

// Metrics exposes cairn's Prometheus metrics: tasks by kind and state, task
// durations, volumes and snapshots by state. Counts are read from the metadata
// at scrape time, so they are right on every server sharing the store.
type Metrics struct {
	db        *meta.DB
	durations *prometheus.HistogramVec
	registry  *prometheus.Registry

	tasks     *prometheus.Desc
	volumes   *prometheus.Desc
	snapshots *prometheus.Desc
	runs      *prometheus.Desc
}

// NewMetrics registers the collectors and hooks task completion on svc.
func NewMetrics(svc *service.Service) *Metrics {
	m := &Metrics{
		db:       svc.DB(),
		registry: prometheus.NewRegistry(),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cairn_task_duration_seconds",
			Help:    "Time from a task's start to its end, by kind and final state.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"kind", "state"}),
		tasks:     prometheus.NewDesc("cairn_tasks", "Tasks in the metadata by kind and state.", []string{"kind", "state"}, nil),
		volumes:   prometheus.NewDesc("cairn_volumes", "Volumes by state.", []string{"state"}, nil),
		snapshots: prometheus.NewDesc("cairn_snapshots", "User snapshots by state.", []string{"state"}, nil),
		runs: prometheus.NewDesc("cairn_schedule_runs", "Schedule runs in the history by state (failed: given up after the retries; retrying: a retry is due).",
			[]string{"state"}, nil),
	}
	m.registry.MustRegister(m.durations, m, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	svc.OnTaskFinished = func(kind, state string, d time.Duration) {
		m.durations.WithLabelValues(kind, state).Observe(d.Seconds())
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.tasks
	ch <- m.volumes
	ch <- m.snapshots
	ch <- m.runs
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.db.View(ctx, func(tx *meta.Tx) error {
		tasks, err := tx.CountTasksByKindState(ctx)
		if err != nil {
			return err
		}
		for k, n := range tasks {
			ch <- prometheus.MustNewConstMetric(m.tasks, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
		vols, snaps, err := tx.CountAll(ctx)
		if err != nil {
			return err
		}
		for st, n := range vols {
			ch <- prometheus.MustNewConstMetric(m.volumes, prometheus.GaugeValue, float64(n), st)
		}
		for st, n := range snaps {
			ch <- prometheus.MustNewConstMetric(m.snapshots, prometheus.GaugeValue, float64(n), st)
		}
		runs, err := tx.CountScheduleRuns(ctx)
		if err != nil {
			return err
		}
		for st, n := range runs {
			ch <- prometheus.MustNewConstMetric(m.runs, prometheus.GaugeValue, float64(n), st)
		}
		return nil
	})
}
