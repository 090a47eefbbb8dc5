// A Go httputil.ReverseProxy: the building block of Knative's activator, as a warm-path baseline.
package main

import (
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

func main() {
	target, err := url.Parse(os.Args[2])
	if err != nil {
		log.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256}
	log.Fatal(http.ListenAndServe(os.Args[1], proxy))
}
