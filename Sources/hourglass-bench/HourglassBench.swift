import ArgumentParser

/// `hourglass-bench`: load generators and measurements. Run in release mode; each subcommand
/// prints figures (and `--json` prints them for machines). Figures on a shared machine are noisy:
/// compare ratios within one run.
@main
struct HourglassBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "hourglass-bench",
    abstract: "Hourglass benchmarks (build with -c release).",
    subcommands: [
      CronBenchmark.self,
      StoreBenchmark.self,
      RPCBenchmark.self,
      SubmitBenchmark.self,
      DispatchBenchmark.self,
    ]
  )
}
