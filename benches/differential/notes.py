"""Analysis of each case's difference between nginx and kactivator ("difference & why safe").

A note starting with "safe" clears the soft flags (POD-REJECT, FWD-NGINX-REJECTED, RETRY) of its
case; the hard flags (POISONED, EXTRA-REQ, CLIENT-DESYNC) are never cleared by a note. Notes were
written against the run recorded in benches/results/differential-before.csv; a behaviour change
needs its note re-read.
"""

_CLTE = ("safe: kactivator's general (hyper) path lets TE override CL (RFC 9112 §6.3): it drops the "
         "CL, forwards only the chunked body (up to the `0` chunk) and closes the client connection "
         "after the response, so the bytes after the last chunk are never read as a request; nginx "
         "refuses CL+TE with 400.")
_OWS = "safe: the value is plain `chunked` (OWS and letter case are legal); handled as `cl-te`. "
_CHUNK = ("differs: kactivator refuses the malformed chunked body with 502 `upstream <pod address>: "
          "client error (SendRequest)`: a client error answered as a gateway error, and the body "
          "shows the pod's address; 400 (as nginx) would be right. Nothing reached the pod.")
_REFUSED_BOTH = "differs: both refuse, nginx with 501 (unknown coding), kactivator with 400."

NOTES = {
    "cl-te": _CLTE,
    "te-cl": _CLTE,
    "te-leading-space+cl": _OWS + _CLTE[5:],
    "te-tab+cl": _OWS + _CLTE[5:],
    "te-odd-case+cl": _OWS + _CLTE[5:],
    "te-identity-chunked+cl": "safe: `identity` is a no-op coding (RFC 2616; gone since RFC 7230); "
                              "kactivator decodes the chunked body, drops the CL, re-chunks and closes "
                              "the client connection as in `cl-te`; nginx answers 501. A 501 for any "
                              "coding but `chunked` would be stricter.",
    "te-gzip-request": "UNSAFE (content, not framing): kactivator decodes the chunked framing and forwards "
                       "`transfer-encoding: chunked` alone: the `gzip` coding is lost and the pod takes the "
                       "compressed bytes as the body. A request coding other than `chunked` should get "
                       "501, as nginx does (RFC 9112 §6.1).",
    "cl-two-equal": "safe: RFC 9110 §8.6 lets a recipient take identical repeated CLs as one; kactivator "
                    "forwards one `content-length: 5` and the pod got exactly the body; nginx refuses (400).",
    "cl-huge-valid": "safe: nginx refuses over `client_max_body_size` (1 MiB default); kactivator streams "
                     "bodies without a size limit by design and forwards the declared CL; the pod (its own "
                     "1 MiB limit) refuses it; nothing is read as a request.",
    "header-long-10k": "safe: nginx's default header buffers are 8 KiB; kactivator's limit is "
                       "`activator.max_header_bytes` (64 KiB); the pod got the header intact.",
    "header-long-70k": "differs: both refuse; kactivator with 431, nginx with 400.",
    "host-duplicate-same": "UNSAFE (RFC 9112 §3.2 MUST): a request with two Host lines must get 400; "
                           "kactivator routes on one of them and forwards.",
    "host-duplicate-other": "UNSAFE (RFC 9112 §3.2 MUST): a request with two different Host lines must "
                            "get 400; kactivator routes on the first (`diff.test`) and forwards. A front "
                            "proxy that routes or authorises on the other one disagrees with it about "
                            "the revision.",
    "host-absent": "differs: kactivator answers 404 (no revision for an empty host) where RFC 9112 §3.2 "
                   "asks for 400; nothing reaches the pod.",
    "te-xchunked+cl": _REFUSED_BOTH,
    "te-chunked-identity+cl": _REFUSED_BOTH,
    "te-vtab+cl": _REFUSED_BOTH,
    "te-chunked-trailing-junk+cl": _REFUSED_BOTH,
    "te-xchunked": _REFUSED_BOTH,
    "chunk-size-bad": _CHUNK,
    "chunk-extension-bare-lf": _CHUNK,
    "chunk-size-overflow": _CHUNK,
    "chunk-data-too-long": _CHUNK,
    "chunk-bare-lf": _CHUNK + " (nginx accepts bare LF in chunk lines.)",
    "chunk-missing-final-crlf": _CHUNK + " (nginx forwards the body and discards what follows `0`.)",
    "header-no-colon": "differs: nginx drops the invalid line (`ignore_invalid_headers`) and forwards; "
                       "kactivator refuses with 400; stricter is safe.",
    "request-line-double-space": "differs: nginx accepts the double space; kactivator refuses with 400.",
    "version-1.10": "differs: nginx reads `HTTP/1.10` as 1.1; kactivator refuses with 400.",
    "expect-100-then-smuggle": "differs: nginx answers the 100 itself; kactivator forwards "
                               "`Expect: 100-continue` with CL 0 (no body to wait for); both pods saw the "
                               "two requests the client sent.",
    "r-cl-differing": "differs, nginx is the unsafe one: nginx 1.22 relays the response with the last CL "
                      "(14), so its client reads the start of the next response as body; kactivator "
                      "refuses with 502 (RFC 9112 §6.3).",
    "r-te-gzip-cl": "same, both imperfect: TE overrides CL (RFC 9112 §6.3) so the body runs to the "
                    "close, but both proxies relay 5 bytes under `Content-Length: 5`; harmless for "
                    "framing because the pod closes the connection.",
    "r-conn-content-length": "UNSAFE: kactivator drops the `Content-Length` the pod listed in "
                             "`Connection` but still frames by it, so the client gets a response "
                             "without length on a connection kept open: the client cannot tell where "
                             "it ends, and a next response on that connection becomes body.",
    "conn-content-length": "UNSAFE (request smuggling): the fast path drops the `Content-Length` the client "
                           "listed in `Connection` but still relays the body, so the pod reads the body as a "
                           "second request, unrouted and without the activator's headers. The CL framing "
                           "the fast path used must reach the pod (or the request be refused).",
    "conn-content-length-slow": "UNSAFE (request smuggling + response poisoning): as `conn-content-length`; "
                                "the hidden request's late answer is then read as the answer to the next "
                                "request on the pooled pod connection: another client (the victim) gets it.",
    "conn-keepalive-content-length": "UNSAFE: as `conn-content-length`, the token listed among others.",
    "r-103-then-200": "differs: kactivator relays the 103 then the 200 (RFC 9110 §15.2: clients must accept "
                      "1xx); nginx 1.22 takes the 103 as the final response and closes.",
    "r-100-unsolicited": "differs: kactivator relays the 100 then the 200; nginx 1.22 takes the 100 as the "
                         "final response and closes.",
    "r-101-unsolicited": "differs: kactivator's fast path answers 502 to a 101 the client did not ask for; "
                         "nginx relays it and closes.",
    "r-status-malformed": "differs: kactivator answers 502; nginx (`upstream sent no valid HTTP/1.0 header`) "
                          "closes without an answer.",
    "r-cl-plus": "differs: kactivator answers 502 (CL is 1*DIGIT); nginx ignores the CL, relays a chunked "
                 "body it cannot end and cuts it at its read timeout.",
    "r-chunk-size-bad": "differs: kactivator answers 502 and closes; nginx closes without an answer.",
    "r-cl-differing@general": "differs, nginx is the unsafe one (see `r-cl-differing`); kactivator's "
                              "general path answers 502 too.",
    "r-103-then-200@general": "differs: kactivator's general path (hyper client) drops the 1xx and relays the "
                              "200; nginx, which answered the `Expect` with its own 100, takes the pod's 1xx "
                              "as final and never answers.",
    "r-100-unsolicited@general": "differs: as `r-103-then-200@general`.",
    "r-101-unsolicited@general": "differs, to fix: kactivator's general path relays a 101 to a client that "
                                 "sent no `Upgrade` (its `Connection`/`Upgrade` headers stripped) and closes; "
                                 "the fast path's 502 is right. The pod connection is not reused (victims "
                                 "clean).",
    "r-status-malformed@general": "differs: kactivator answers 502; nginx, after its own 100, never answers.",
    "r-cl-plus@general": "differs: kactivator answers 502; nginx, after its own 100, never answers.",
    "r-chunk-size-bad@general": "differs: both cut the connection without a final response.",
}
