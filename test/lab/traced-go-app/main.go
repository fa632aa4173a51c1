// A Go application server instrumented the standard way (otelhttp around net/http), exporting its
// spans with the OTLP/HTTP protobuf exporter to OTEL_EXPORTER_OTLP_ENDPOINT, which the trace
// enrichment lab test points at the sidecar's pass-through. Built by the test (test/helpers/go-app.ts).
// Usage: traced-go-app HOST PORT. Prints READY when listening; on SIGTERM flushes and exits 0.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: traced-go-app HOST PORT")
		os.Exit(2)
	}
	ctx := context.Background()
	// the SDK retries refused exports (503 + Retry-After) for up to MaxElapsedTime
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithRetry(otlptracehttp.RetryConfig{
		Enabled: true, InitialInterval: time.Second, MaxInterval: 5 * time.Second, MaxElapsedTime: 2 * time.Minute,
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "exporter:", err)
		os.Exit(1)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "traced-go-app"), attribute.Int("process.pid", os.Getpid()))
	provider := sdktrace.NewTracerProvider(sdktrace.WithResource(res),
		sdktrace.WithBatcher(exporter, sdktrace.WithBatchTimeout(300*time.Millisecond), sdktrace.WithExportTimeout(3*time.Minute)))
	otel.SetTracerProvider(provider)

	var served atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seq := r.Header.Get("X-Test-Seq")
		served.Add(1)
		trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("test.seq", seq))
		host, port, _ := net.SplitHostPort(r.RemoteAddr)
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"seq": seq, "peer": host, "peerPort": port})
	})
	srv := &http.Server{Handler: otelhttp.NewHandler(handler, "GET /"), IdleTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Args[1], os.Args[2]))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Println("READY")
	go func() { _ = srv.Serve(ln) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	shutdownCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	if err := provider.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintln(os.Stderr, "flush:", err)
		os.Exit(1)
	}
	fmt.Printf("{\"served\":%d}\n", served.Load())
}
