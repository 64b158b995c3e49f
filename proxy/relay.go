package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const relayBufferSize = 32 << 10

// relay copies between client and target in both directions until both
// have finished, one side fails, or idle passes with no traffic in either
// direction. An EOF in one direction is passed on as a half-close, so
// request-then-response protocols finish cleanly. It closes both.
func relay(client, target net.Conn, idle time.Duration) {
	var lastActive atomic.Int64
	lastActive.Store(time.Now().UnixNano())
	var closeOnce sync.Once
	closeBoth := func() {
		closeOnce.Do(func() {
			client.Close()
			target.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		if err := copyWhileActive(dst, src, idle, &lastActive); err != nil {
			closeBoth() // an error or idleness ends the other direction too
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			closeBoth()
		}
	}
	go pipe(target, client)
	go pipe(client, target)
	wg.Wait()
	closeBoth()
}

// copyWhileActive copies src to dst until EOF (nil) or an error. A read that
// waits idle for data is given up only if the other direction was quiet too:
// a long upload with a silent response is not idle.
func copyWhileActive(dst, src net.Conn, idle time.Duration, lastActive *atomic.Int64) error {
	buf := make([]byte, relayBufferSize)
	for {
		if idle > 0 {
			_ = src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := src.Read(buf)
		if n > 0 {
			lastActive.Store(time.Now().UnixNano())
			if idle > 0 {
				_ = dst.SetWriteDeadline(time.Now().Add(idle))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, lastActive.Load())) < idle:
			// The other direction is busy; keep waiting.
		default:
			return err
		}
	}
}
