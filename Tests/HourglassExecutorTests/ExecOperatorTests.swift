import Foundation
import HourglassExecutor
import HourglassTestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite("exec operator", .timeLimit(.minutes(3)))
struct ExecOperatorTests {
  func makeOperator(_ scratch: ScratchDirectory) -> ExecOperator {
    var configuration = ExecOperator.Configuration.defaults
    configuration.temporaryRoot = scratch.path
    configuration.killGrace = .seconds(2)
    return ExecOperator(configuration: configuration)
  }

  /// Expects that no run's directory is left in `scratch` (the operator's temporary root).
  func expectNoRunDirectoryLeft(in scratch: ScratchDirectory, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let left = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.hasPrefix("hourglass-run-") }
    #expect(left.isEmpty, "left behind: \(left)", sourceLocation: sourceLocation)
  }

  @Test("the task sees only its own environment, runs in a private directory that is removed")
  func environmentAndDirectory() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let script = """
      #!/bin/sh
      env
      echo "cwd=$(pwd)"
      echo "modes=$(stat -c %a .) $(stat -c %a "$0")"
      printf 'args='; printf '%s|' "$@"; echo
      """
    let outcome = await makeOperator(scratch).run(scriptRequest(script, arguments: ["a b", "c"]), cancellation: RunCancellation())
    #expect(outcome.status == .succeeded)
    #expect(outcome.exitCode == 0)
    let lines = String(decoding: outcome.outputTail, as: UTF8.self).split(separator: "\n").map(String.init)
    let cwd = try #require(lines.first { $0.hasPrefix("cwd=") }).dropFirst(4)
    #expect(cwd.hasPrefix(scratch.path + "/hourglass-run-"))
    #expect(lines.contains("modes=700 700"))
    #expect(lines.contains("args=a b|c|"))
    var environment = Set(lines.filter { $0.contains("=") && !$0.hasPrefix("cwd=") && !$0.hasPrefix("modes=") && !$0.hasPrefix("args=") })
    // The script's own shell (dash) exports PWD; the executor passes no PWD of its own.
    #expect(environment.remove("PWD=\(cwd)") != nil)
    #expect(
      environment == [
        "HOURGLASS_RUN_ID=run-1", "HOURGLASS_TASK_ID=task-1", "HOURGLASS_SCHEDULED_AT=2026-09-21T14:13:20Z",
        "HOURGLASS_ATTEMPT=2",
      ])
    #expect(!FileManager.default.fileExists(atPath: String(cwd)), "the run's directory is removed afterwards")
  }

  @Test(
    "with bash as the limits' shell, the task still sees exactly its own environment",
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/bash"), "needs /bin/bash"))
  func environmentWithBash() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    var configuration = makeOperator(scratch).configuration
    configuration.shell = "/bin/bash"
    configuration.path = "/usr/bin:/bin"
    // Not a script (its own shell would add PWD): `env` itself prints what it was given.
    let env = try Array(Data(contentsOf: URL(fileURLWithPath: "/usr/bin/env")))
    var request = scriptRequest("")
    request.blob = env
    request.blobSHA256 = ExecOperator.digest(of: env)
    let outcome = await ExecOperator(configuration: configuration).run(request, cancellation: RunCancellation())
    #expect(outcome.status == .succeeded)
    let lines = Set(String(decoding: outcome.outputTail, as: UTF8.self).split(separator: "\n").map(String.init))
    #expect(
      lines == [
        "HOURGLASS_RUN_ID=run-1", "HOURGLASS_TASK_ID=task-1", "HOURGLASS_SCHEDULED_AT=2026-09-21T14:13:20Z",
        "HOURGLASS_ATTEMPT=2", "PATH=/usr/bin:/bin",
      ], "no SHLVL, _ or PWD from bash")
  }

  @Test("removing the run's directory removes a symbolic link the task left, never what it points to")
  func linksAreNotFollowedOnRemoval() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let outside = scratch.path + "/outside"
    try FileManager.default.createDirectory(atPath: outside + "/inner", withIntermediateDirectories: true)
    #expect(FileManager.default.createFile(atPath: outside + "/inner/keep", contents: Data("x".utf8)))
    #expect(chmod(outside, 0o755) == 0)
    let script = "#!/bin/sh\nln -s \"$1\" link && mkdir d && ln -s \"$1/inner\" d/deeper && chmod 0 d\n"
    let outcome = await makeOperator(scratch).run(scriptRequest(script, arguments: [outside]), cancellation: RunCancellation())
    #expect(outcome.status == .succeeded)
    #expect(FileManager.default.fileExists(atPath: outside + "/inner/keep"))
    var info = stat()
    #expect(stat(outside, &info) == 0 && info.st_mode & 0o777 == 0o755)
    try expectNoRunDirectoryLeft(in: scratch)
  }

  @Test(
    "the run's directory is removed even when the task made part of it unreadable",
    .enabled(if: geteuid() != 0, "root removes whatever the permissions say"))
  func unreadableLeftoversAreRemoved() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let script = "#!/bin/sh\nmkdir -p d/e && touch d/x d/e/y && chmod 0 d/e d\n"
    let outcome = await makeOperator(scratch).run(scriptRequest(script), cancellation: RunCancellation())
    #expect(outcome.status == .succeeded)
    try expectNoRunDirectoryLeft(in: scratch)
  }

  @Test("the run's directory is removed even when the task left a tree deeper than one removal pass goes")
  func deepTreesAreRemoved() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    // 700 levels: more than twice the levels one pass holds descriptors for.
    let script = "#!/bin/sh\ni=0\nwhile [ $i -lt 700 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done\ntouch bottom\n"
    let outcome = await makeOperator(scratch).run(scriptRequest(script), cancellation: RunCancellation())
    #expect(outcome.status == .succeeded, "\(outcome.error)")
    try expectNoRunDirectoryLeft(in: scratch)
  }

  @Test("a nonzero exit status is FAILED with that exit code and the output")
  func exitCodeThree() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let outcome = await makeOperator(scratch).run(scriptRequest("#!/bin/sh\necho to-stdout\necho to-stderr >&2\nexit 3\n"), cancellation: RunCancellation())
    #expect(outcome.status == .failed)
    #expect(outcome.exitCode == 3)
    #expect(String(decoding: outcome.outputTail, as: UTF8.self) == "to-stdout\nto-stderr\n")
  }

  @Test("only the last 64 KiB of 1 MiB of output are kept")
  func outputTailIsCapped() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let script = "#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\000' a\nprintf END\n"
    let outcome = await makeOperator(scratch).run(scriptRequest(script), cancellation: RunCancellation())
    #expect(outcome.status == .succeeded)
    #expect(outcome.outputTail.count == 64 * 1024)
    #expect(outcome.outputTail.suffix(3) == Array("END".utf8))
    #expect(outcome.outputTail.dropLast(3).allSatisfy { $0 == UInt8(ascii: "a") })
  }

  @Test("a blob whose SHA-256 does not match is FAILED and never runs")
  func digestMismatch() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let marker = scratch.path + "/ran"
    var request = scriptRequest("#!/bin/sh\ntouch \(marker)\n")
    request.blobSHA256 = String(repeating: "0", count: 64)
    let outcome = await makeOperator(scratch).run(request, cancellation: RunCancellation())
    #expect(outcome.status == .failed)
    #expect(outcome.exitCode == ExecOperator.notStartedExitCode)
    #expect(outcome.error.contains("SHA-256"))
    #expect(!FileManager.default.fileExists(atPath: marker))
  }

  @Test("a stop request kills the whole process group, background children included")
  func cancellationKillsGroup() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    await Self.expectStopKillsGroup(makeOperator(scratch), pids: try scratch.fifo("pids"))
  }

  /// Runs a task that leaves a child in the background and reports both pids through the FIFO
  /// `pids`, stops it, and checks that neither process outlived the run.
  static func expectStopKillsGroup(_ op: ExecOperator, pids: String) async {
    let cancellation = RunCancellation()
    async let outcome = op.run(scriptRequest("#!/bin/sh\nsleep 1000 &\necho \"$$ $!\" > \"$1\"\nwait\n", arguments: [pids]), cancellation: cancellation)
    let started = await readFIFO(pids).split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    #expect(started.count == 2)
    cancellation.cancel(.timedOut)
    let result = await outcome
    #expect(result.status == .timedOut)
    for pid in started { #expect(!isAlive(pid), "process \(pid) outlived its run") }
  }

  /// An operator that runs tasks as `nobody`, in a scratch folder that user can traverse.
  func makeOperatorRunningAsNobody(_ scratch: ScratchDirectory) throws -> ExecOperator {
    #expect(chmod(scratch.path, 0o711) == 0)
    var configuration = makeOperator(scratch).configuration
    let nobody = try #require(ExecOperator.RunAs.user(named: "nobody"))
    configuration.runAs = nobody
    return ExecOperator(configuration: configuration)
  }

  @Test(
    "with runAs, the task runs as that user, without supplementary groups, in a directory and from a file it owns",
    .enabled(if: geteuid() == 0, "only root can start tasks as another user"))
  func runsAsAnotherUser() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let nobody = try #require(ExecOperator.RunAs.user(named: "nobody"))
    let script = """
      #!/bin/sh
      echo "ids=$(id -u) $(id -g) $(id -G)"
      echo "owners=$(stat -c %u:%g .) $(stat -c %u:%g "$0")"
      touch written && echo "wrote"
      grep NoNewPrivs /proc/self/status
      """
    let outcome = try await makeOperatorRunningAsNobody(scratch).run(scriptRequest(script), cancellation: RunCancellation())
    let lines = String(decoding: outcome.outputTail, as: UTF8.self).split(separator: "\n").map(String.init)
    #expect(outcome.status == .succeeded, "\(lines)")
    #expect(lines.contains("ids=\(nobody.uid) \(nobody.gid) \(nobody.gid)"), "\(lines)")
    #expect(lines.contains("owners=\(nobody.uid):\(nobody.gid) \(nobody.uid):\(nobody.gid)"), "\(lines)")
    #expect(lines.contains("wrote"))
    #expect(lines.contains { $0.hasPrefix("NoNewPrivs:") && $0.hasSuffix("1") }, "\(lines)")
  }

  @Test(
    "with runAs, a stop request still kills the task's whole process group",
    .enabled(if: geteuid() == 0, "only root can start tasks as another user"))
  func runAsCancellationKillsGroup() async throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let pids = try scratch.fifo("pids")
    #expect(chmod(pids, 0o666) == 0)
    await Self.expectStopKillsGroup(try makeOperatorRunningAsNobody(scratch), pids: pids)
  }
}
