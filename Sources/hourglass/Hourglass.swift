import ArgumentParser

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The `hourglass` command: runs the coordinator and executors, and talks to them as a client.
@main
struct Hourglass: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "hourglass",
    abstract: "A distributed task scheduler: schedule binaries once, by cron or at an interval.",
    subcommands: [
      DevCommand.self,
      ScheduleCommand.self,
      GetCommand.self,
      ListCommand.self,
      DeleteCommand.self,
      RunsCommand.self,
      CoordinatorCommand.self,
      ExecutorCommand.self,
      CertsCommand.self,
      Preview.self,
    ]
  )

  /// Parses the command line and runs the chosen command.
  ///
  /// ArgumentParser exits usage errors with `EX_USAGE` (64); Hourglass promises status 2 for
  /// every usage error (like most Unix tools), so the top level maps them here.
  static func main() async {
    ParentLifeline.startIfRequested()
    do {
      var command = try parseAsRoot()
      if var asyncCommand = command as? any AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try command.run()
      }
    } catch {
      exitWithHourglassStatus(for: error)
    }
  }

  static func exitWithHourglassStatus(for error: any Error) -> Never {
    let code = exitCode(for: error)
    let message = fullMessage(for: error)
    if code == .success {
      if !message.isEmpty { print(message) }
      Glibc.exit(0)
    }
    if !message.isEmpty {
      FileHandleOutput.standardError.write(message + "\n")
    }
    if code == .validationFailure {
      Glibc.exit(2)
    }
    Glibc.exit(code.rawValue)
  }
}
