// A candidate or observer using Go's clientv3/concurrency.Election, for backend-etcd's
// tests/go_election.rs. Built in GOPATH mode against Debian's golang-etcd-server-dev.
//
//	election_peer ENDPOINT campaign NAME VALUE: prints "LEADER <key> <create rev>" once
//	    elected, then obeys stdin lines "proclaim V" (prints "PROCLAIMED" or "E ...") and
//	    "resign" (prints "RESIGNED" and exits).
//	election_peer ENDPOINT observe NAME: prints "SEEN <value> <create rev>" per observation.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Println("E usage: election_peer ENDPOINT campaign NAME VALUE | observe NAME")
		os.Exit(2)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{os.Args[1]}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println("E connect:", err)
		os.Exit(1)
	}
	s, err := concurrency.NewSession(c, concurrency.WithTTL(5))
	if err != nil {
		fmt.Println("E session:", err)
		os.Exit(1)
	}
	e := concurrency.NewElection(s, os.Args[3])
	ctx := context.Background()
	switch os.Args[2] {
	case "campaign":
		if err := e.Campaign(ctx, os.Args[4]); err != nil {
			fmt.Println("E campaign:", err)
			os.Exit(1)
		}
		fmt.Println("LEADER", e.Key(), e.Rev())
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			line := in.Text()
			switch {
			case strings.HasPrefix(line, "proclaim "):
				if err := e.Proclaim(ctx, strings.TrimPrefix(line, "proclaim ")); err != nil {
					fmt.Println("E proclaim:", err)
				} else {
					fmt.Println("PROCLAIMED")
				}
			case line == "resign":
				if err := e.Resign(ctx); err != nil {
					fmt.Println("E resign:", err)
					os.Exit(1)
				}
				fmt.Println("RESIGNED")
				s.Close()
				return
			}
		}
	case "observe":
		for resp := range e.Observe(ctx) {
			kv := resp.Kvs[0]
			fmt.Println("SEEN", string(kv.Value), kv.CreateRevision)
		}
	}
}
