//go:build !wasip1

package gust

import (
	"log"
	"net/http"
	"os"
)

func serve(h http.Handler) {
	addr := ":" + os.Getenv("PORT")
	if addr == ":" {
		addr = ":8080"
	}
	log.Printf("gust: serving the function locally on %s", addr)
	log.Fatal(http.ListenAndServe(addr, h))
}
