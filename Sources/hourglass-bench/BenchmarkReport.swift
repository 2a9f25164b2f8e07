import Foundation

/// A benchmark's results: named figures, printed as aligned text or as one JSON object.
struct BenchmarkReport {
  /// The benchmark's name, e.g. `cron` or `rpc`.
  var benchmark: String
  /// Facts about the run that are not figures (shape, machine, parameters).
  var parameters: [String: String] = [:]
  /// Result rows; each is a flat map of figure name to value, with a `name` key identifying it.
  var results: [[String: BenchmarkValue]] = []

  /// Prints the report to standard output, as JSON when `json` is true.
  func print(json: Bool) {
    if json {
      var object: [String: Any] = ["benchmark": benchmark, "parameters": parameters]
      object["results"] = results.map { row in row.mapValues { $0.jsonValue } }
      let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
      Swift.print(String(decoding: data, as: UTF8.self))
    } else {
      Swift.print("benchmark: \(benchmark)")
      for (key, value) in parameters.sorted(by: { $0.key < $1.key }) {
        Swift.print("  \(key): \(value)")
      }
      for row in results {
        let name = row["name"].map { "\($0)" } ?? "-"
        let rest = row.filter { $0.key != "name" }.sorted { $0.key < $1.key }
          .map { "\($0.key)=\($0.value)" }.joined(separator: "  ")
        Swift.print("  \(name): \(rest)")
      }
    }
  }
}

/// One figure in a benchmark report.
enum BenchmarkValue: CustomStringConvertible {
  case int(Int)
  case double(Double)
  case string(String)

  var jsonValue: Any {
    switch self {
    case .int(let v): return v
    case .double(let v): return (v * 1000).rounded() / 1000
    case .string(let v): return v
    }
  }

  var description: String {
    switch self {
    case .int(let v): return String(v)
    case .double(let v): return String(format: "%.3f", v)
    case .string(let v): return v
    }
  }
}

/// CPU time (user and system, every thread) this process has used so far, in seconds: what a
/// phase costs when the machine is shared and its rate is noisy.
func processCPUSeconds() -> Double {
  var usage = rusage()
  #if canImport(Glibc)
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
  #else
    getrusage(RUSAGE_SELF, &usage)
  #endif
  func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
  return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
