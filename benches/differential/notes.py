"""Analysis of each case's difference between nginx and kactivator ("difference & why safe").

A note starting with "safe" clears the soft flags (POD-REJECT, FWD-NGINX-REJECTED, RETRY) of its
case; the hard flags (POISONED, EXTRA-REQ, CLIENT-DESYNC) are never cleared by a note. A note is
shown for cases that differ or are flagged; on a case that behaves as nginx does only a note
starting with "same" is shown. The notes describe kactivator after the issue-10 hardening (main
518d589); the notes of the run before it are kept in benches/results/differential-before.csv.
"""

_REFUSED_BOTH = "differs: both refuse, nginx with 501 (unknown coding), kactivator with 400."
_GENERAL_1XX = ("differs: kactivator's general path (hyper client) drops the pod's 1xx and relays the "
                "200; nginx, which answered the `Expect` with its own 100, takes the pod's 1xx as final "
                "and never answers.")
_GENERAL_502 = "differs: kactivator answers 502; nginx, after its own 100, never answers."

NOTES = {
    # --- requests
    "cl-huge-valid": "safe: nginx refuses over `client_max_body_size` (1 MiB default); kactivator streams "
                     "bodies without a size limit by design and forwards the declared CL; the pod (its own "
                     "1 MiB limit) refuses it; nothing is read as a request.",
    "header-long-10k": "safe: nginx's default header buffers are 8 KiB; kactivator's limit is "
                       "`activator.max_header_bytes` (64 KiB); the pod got the header intact.",
    "header-long-70k": "differs: both refuse; kactivator with 431, nginx with 400.",
    "te-xchunked+cl": _REFUSED_BOTH,
    "te-chunked-identity+cl": _REFUSED_BOTH,
    "te-identity-chunked+cl": _REFUSED_BOTH,
    "te-vtab+cl": _REFUSED_BOTH,
    "te-chunked-trailing-junk+cl": _REFUSED_BOTH,
    "te-xchunked": _REFUSED_BOTH,
    "te-tab+cl": "differs: both refuse; kactivator with 400 (CL together with TE), nginx with 501 (it "
                 "does not trim the tab and sees an unknown coding).",
    "te-gzip-request": "differs: both refuse a request coding other than `chunked`; kactivator with 400, "
                       "nginx with 501 (RFC 9112 §6.1 suggests 501).",
    "header-no-colon": "differs: nginx drops the invalid line (`ignore_invalid_headers`) and forwards; "
                       "kactivator refuses with 400; stricter is safe.",
    "request-line-double-space": "differs: nginx accepts the double space; kactivator refuses with 400.",
    "version-1.10": "differs: nginx reads `HTTP/1.10` as 1.1; kactivator refuses with 400.",
    "chunk-missing-final-crlf": "differs: kactivator refuses with 400; nginx forwards the body and "
                                "discards what follows the `0` chunk.",
    "chunk-bare-lf": "differs: kactivator refuses with 400; nginx accepts bare LF in chunk lines and "
                     "forwards a clean chunked body.",
    # --- responses
    "r-cl-differing": "differs, nginx is the unsafe one: nginx 1.22 relays the response with the last CL "
                      "(14), so its client reads the start of the next response as body; kactivator "
                      "refuses with 502 (RFC 9112 §6.3).",
    "r-te-gzip-cl": "same status; kactivator lets TE override CL (RFC 9112 §6.3), relays "
                    "`Transfer-Encoding: gzip` and the whole body to the close; nginx relays 5 bytes under "
                    "`Content-Length: 5`.",
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
    "r-103-then-200@general": _GENERAL_1XX,
    "r-100-unsolicited@general": _GENERAL_1XX,
    "r-101-unsolicited@general": "differs: kactivator answers 502 (before 445a256 its general path relayed "
                                 "the 101 to a client that had asked for no upgrade); nginx, after its own "
                                 "100, never answers.",
    "r-status-malformed@general": _GENERAL_502,
    "r-cl-plus@general": _GENERAL_502,
    "r-chunk-size-bad@general": "differs: both cut the connection without a final response.",
}
