"""A Prometheus endpoint made with prometheus-client, driven from stdin.

Usage: prom_exporter.py [PORT]  (0 or none: a free port)
Prints "port N" once serving. Then reads commands, one a line, and prints
"ok" after each:
  inc N      jobs_done_total +1, N times
  gauge V    queue_depth = V
  obs V      task_seconds (histogram) observes V
  quit       exits
"""
import sys

from prometheus_client import Counter, Gauge, Histogram, start_http_server

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
done = Counter("jobs_done", "Jobs done.", ["queue"])
depth = Gauge("queue_depth", "Jobs waiting.")
seconds = Histogram("task_seconds", "Task time.", buckets=(0.1, 0.5, 1.0))

server, _thread = start_http_server(port, addr="127.0.0.1")
print("port", server.server_port, flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "inc":
        for _ in range(int(words[1])):
            done.labels(queue="main").inc()
    elif words[0] == "gauge":
        depth.set(float(words[1]))
    elif words[0] == "obs":
        seconds.observe(float(words[1]))
    elif words[0] == "quit":
        print("ok", flush=True)
        break
    print("ok", flush=True)
server.shutdown()
