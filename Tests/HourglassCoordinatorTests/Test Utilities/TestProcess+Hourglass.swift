import Foundation
import HourglassTestSupport

extension TestProcess {
  /// `hourglass ARGUMENTS` (the executable built beside the tests), its standard output and
  /// error together in ``TestProcess/output``: its log is the signal that something happened.
  /// Its standard input is a lifeline: it exits when this test process dies.
  static func hourglass(_ arguments: [String]) throws -> TestProcess {
    try TestProcess.start(
      ProcessSetup.executable, arguments: arguments,
      environment: ProcessInfo.processInfo.environment.merging(["HOURGLASS_EXIT_ON_STDIN_EOF": "1"], uniquingKeysWith: { $1 }),
      input: .lifeline)
  }

  /// The port in the listener's "listening" log line (`…127.0.0.1:PORT`), once printed.
  var listeningPort: Int? {
    let text = output
    guard let line = text.split(separator: "\n").first(where: { $0.contains("listening") }),
      let host = line.range(of: "127.0.0.1"),
      let colon = line.range(of: ":", options: .backwards, range: host.upperBound..<line.endIndex)
    else { return nil }
    return Int(line[colon.upperBound...].prefix { $0.isNumber })
  }
}
