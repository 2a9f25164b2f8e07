import Testing

/// The strict exposition-format reader the metrics tests rely on: it must accept what
/// Prometheus accepts and refuse what it refuses, or the scrape test proves nothing.
@Suite("Prometheus text format reader")
struct PrometheusTextTests {
  static let valid = """
    # HELP hourglass_runs_dispatched_total Leases pushed.
    # TYPE hourglass_runs_dispatched_total counter
    hourglass_runs_dispatched_total 3
    # A free comment.
    # TYPE hourglass_executor_free_slots gauge
    hourglass_executor_free_slots{executor="exec-1"} 2.0
    hourglass_executor_free_slots{executor="a \\"quoted\\" \\\\ name\\n"} -1.5e3
    # TYPE hourglass_dispatch_lateness_seconds histogram
    hourglass_dispatch_lateness_seconds_bucket{le="0.5"} 1
    hourglass_dispatch_lateness_seconds_bucket{le="1.0"} 2
    hourglass_dispatch_lateness_seconds_bucket{le="+Inf"} 2
    hourglass_dispatch_lateness_seconds_sum 1.25
    hourglass_dispatch_lateness_seconds_count 2
    hourglass_untyped_thing NaN 1795996800000

    """

  @Test("a well-formed exposition parses, with values, labels, escapes and types")
  func valid() throws {
    let text = try PrometheusText(Self.valid)
    #expect(text.value("hourglass_runs_dispatched_total") == 3)
    #expect(text.value("hourglass_executor_free_slots", ["executor": "exec-1"]) == 2)
    #expect(text.value("hourglass_executor_free_slots", ["executor": "a \"quoted\" \\ name\n"]) == -1500)
    #expect(text.value("hourglass_dispatch_lateness_seconds_bucket", ["le": "+Inf"]) == 2)
    #expect(text.value("hourglass_dispatch_lateness_seconds_sum") == 1.25)
    #expect(text.value("hourglass_untyped_thing")?.isNaN == true)
    #expect(text.type(of: "hourglass_dispatch_lateness_seconds") == "histogram")
    #expect(text.type(of: "hourglass_runs_dispatched_total") == "counter")
    #expect(text.families["hourglass_dispatch_lateness_seconds"]?.samples.count == 5)
  }

  @Test(
    "malformed expositions are refused",
    arguments: [
      ("no final line feed", "a 1"),
      ("bad metric name", "1abc 1\n"),
      ("bad label name", "a{1x=\"v\"} 1\n"),
      ("unquoted label value", "a{x=v} 1\n"),
      ("bad escape", "a{x=\"\\t\"} 1\n"),
      ("unterminated labels", "a{x=\"v\" 1\n"),
      ("missing value", "a{x=\"v\"}\n"),
      ("bad value", "a one\n"),
      ("bad timestamp", "a 1 soon\n"),
      ("duplicate series", "a{x=\"1\"} 1\na{x=\"1\"} 2\n"),
      ("duplicate label", "a{x=\"1\",x=\"2\"} 1\n"),
      ("unknown type", "# TYPE a meter\na 1\n"),
      ("TYPE after samples", "a 1\n# TYPE a counter\n"),
      ("two TYPE lines", "# TYPE a counter\n# TYPE a counter\na 1\n"),
      ("family split", "# TYPE a gauge\na{x=\"1\"} 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n"),
      ("negative counter", "# TYPE a_total counter\na_total -1\n"),
      ("histogram without +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n"),
      ("+Inf unequal to count", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n"),
      ("buckets shrink", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"),
      ("histogram without _sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"),
    ])
  func invalid(_ reason: String, _ text: String) {
    #expect(throws: PrometheusText.ParseError.self, "\(reason)") { try PrometheusText(text) }
  }
}
