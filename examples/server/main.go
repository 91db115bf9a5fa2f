// Command server is a small Redis-compatible server whose persistence is
// encrypted at rest by cachecrypt: strings with expiry, an append-only file
// (AOF) with Redis' appendfsync policies, and BGSAVE snapshots (RDB), all on
// the persistence disk of a cachecrypt Instance under the platform-managed key
// (MMK, created on first use). On start it loads the encrypted snapshot, then
// replays the encrypted AOF.
//
//	go run ./examples/server -dir /tmp/cc
//	redis-cli -p 6380 set greeting hello
//
// Commands: PING, ECHO, GET, SET (EX, PX, EXAT, PXAT, NX, XX, KEEPTTL), INCR,
// DECR, INCRBY, DEL, EXISTS, EXPIRE, PEXPIRE, PEXPIREAT, TTL, PTTL, DBSIZE,
// FLUSHALL, FLUSHDB, BGSAVE, SAVE, LASTSAVE, INFO, CONFIG GET, SELECT 0,
// QUIT.
//
// -plain-aof runs the same server with a plaintext AOF (a single
// appendonly.aof file): the baseline of the benchmark in README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/cachecrypt/cachecrypt/aof"
)

func main() {
	cfg := Config{}
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:6380", "address to listen on")
	flag.StringVar(&cfg.Dir, "dir", "", "data directory of the cachecrypt instance (required)")
	fsync := flag.String("appendfsync", "everysec", "AOF fsync policy: always, everysec or no")
	flag.BoolVar(&cfg.PlainAOF, "plain-aof", false, "write a plaintext AOF instead of the encrypted one (benchmark baseline)")
	flag.Parse()
	if cfg.Dir == "" {
		fmt.Fprintln(os.Stderr, "server: -dir is required, e.g. go run ./examples/server -dir /tmp/cc")
		os.Exit(2)
	}
	p, err := ParsePolicy(*fsync)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg.Fsync = p

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := Serve(ctx, ln, cfg); err != nil {
		log.Fatal(err)
	}
}

// ParsePolicy parses an appendfsync value.
func ParsePolicy(s string) (aof.Policy, error) {
	switch s {
	case "always":
		return aof.Always, nil
	case "everysec":
		return aof.EverySec, nil
	case "no":
		return aof.No, nil
	}
	return 0, fmt.Errorf("server: -appendfsync %q: want always, everysec or no", s)
}

// Config configures Serve.
type Config struct {
	Addr     string
	Dir      string     // the cachecrypt instance's directory
	Fsync    aof.Policy // appendfsync
	PlainAOF bool       // plaintext AOF: the benchmark baseline
	Logger   *slog.Logger
}

// Serve opens the instance in cfg.Dir, loads its data and serves clients on
// ln until ctx is cancelled; then it syncs the AOF and closes everything.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := Open(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	cfg.Logger.Info("ready", "addr", ln.Addr().String(), "keys", s.db.size(), "aof", s.journal.sink.Name(), "appendfsync", cfg.Fsync.String())
	errc := make(chan error, 1)
	go func() { errc <- s.serve(ln) }()
	select {
	case <-ctx.Done():
		ln.Close()
		<-errc
		return s.Close()
	case err := <-errc:
		s.Close()
		return err
	}
}
