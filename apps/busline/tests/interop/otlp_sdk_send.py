"""Sends known metrics to a busline monitor with the OpenTelemetry Python SDK.

Usage: otlp_sdk_send.py ENDPOINT  (e.g. http://127.0.0.1:4318/v1/metrics)

Resource service.name = "shop". Two exports (force_flush), cumulative
temporality (the SDK's default), gzip-compressed protobuf:
  1st: orders{region=eu} +5, orders{region=us} +2, latency_ms 5, 15, 150, 1500,
       temperature (gauge) 21.5
  2nd: orders{region=eu} +3, latency_ms 40, temperature 23
Prints "exported" after each export succeeded, and "done".
"""
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

endpoint = sys.argv[1]
exporter = OTLPMetricExporter(endpoint=endpoint, compression=Compression.Gzip, timeout=30)
# An interval far longer than the test: only force_flush exports.
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
provider = MeterProvider(
    metric_readers=[reader], resource=Resource.create({"service.name": "shop"})
)
meter = provider.get_meter("interop-test")
orders = meter.create_counter("orders")
latency = meter.create_histogram("latency_ms", unit="ms")
temperature = meter.create_gauge("temperature")

orders.add(5, {"region": "eu"})
orders.add(2, {"region": "us"})
for v in (5, 15, 150, 1500):
    latency.record(v)
temperature.set(21.5)
if not provider.force_flush(timeout_millis=30_000):
    sys.exit("the first export failed")
print("exported", flush=True)

orders.add(3, {"region": "eu"})
latency.record(40)
temperature.set(23)
if not provider.force_flush(timeout_millis=30_000):
    sys.exit("the second export failed")
print("exported", flush=True)
provider.shutdown()
print("done", flush=True)
