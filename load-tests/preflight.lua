-- wrk script: a CORS preflight, as a browser sends it before a cross-origin POST with an
-- Authorization header (run.sh's *-preflight targets; answered 204 by the proxy itself).
wrk.method = "OPTIONS"
wrk.headers["Origin"] = "https://app.bench.local"
wrk.headers["Access-Control-Request-Method"] = "POST"
wrk.headers["Access-Control-Request-Headers"] = "authorization, content-type"
