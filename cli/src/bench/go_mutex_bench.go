// The contention loop of Go's clientv3/concurrency.Mutex for tumbler bench (see
// peer_process.rs for the protocol). One etcd client and session per contender.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Println("E usage: go-mutex-bench ENDPOINTS CLIENTS MILLIS NAME")
		os.Exit(2)
	}
	endpoints := strings.Split(os.Args[1], ",")
	clients, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Println("E clients:", err)
		os.Exit(2)
	}
	millis, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Println("E millis:", err)
		os.Exit(2)
	}
	name := os.Args[4]
	var conns []*clientv3.Client
	var sessions []*concurrency.Session
	for i := 0; i < clients; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Println("E connect:", err)
			os.Exit(1)
		}
		s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
		if err != nil {
			fmt.Println("E session:", err)
			os.Exit(1)
		}
		conns = append(conns, c)
		sessions = append(sessions, s)
	}
	in := bufio.NewReader(os.Stdin)
	fmt.Println("READY")
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(0)
	}
	start := time.Now()
	deadline := start.Add(time.Duration(millis) * time.Millisecond)
	var mu sync.Mutex
	var out strings.Builder
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(id int, s *concurrency.Session) {
			defer wg.Done()
			var local strings.Builder
			m := concurrency.NewMutex(s, name)
			ctx := context.Background()
			for time.Now().Before(deadline) {
				asked := time.Since(start).Nanoseconds()
				if err := m.Lock(ctx); err != nil {
					fmt.Fprintf(&local, "E lock: %v\n", err)
					break
				}
				got := time.Since(start).Nanoseconds()
				fmt.Fprintf(&local, "A %d %d %d\n", id, asked, got)
				released := time.Since(start).Nanoseconds()
				if err := m.Unlock(ctx); err != nil {
					fmt.Fprintf(&local, "E unlock: %v\n", err)
					break
				}
				fmt.Fprintf(&local, "R %d %d\n", id, released)
			}
			mu.Lock()
			out.WriteString(local.String())
			mu.Unlock()
		}(i, sessions[i])
	}
	wg.Wait()
	elapsed := time.Since(start).Nanoseconds()
	fmt.Print(out.String())
	fmt.Printf("DONE %d\n", elapsed)
	// Wait until the bench has read the counters again (it closes our stdin).
	in.ReadString('\n')
	for i := range sessions {
		sessions[i].Close()
		conns[i].Close()
	}
}
