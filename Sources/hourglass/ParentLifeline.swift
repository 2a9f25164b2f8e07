import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Ties this process's life to its parent's, for supervisors and tests that start `hourglass`
/// as a child: with `HOURGLASS_EXIT_ON_STDIN_EOF=1` in the environment, the process exits at once
/// (status 70, no drain) when its standard input reaches end of file. The parent gives the child
/// a pipe as standard input and keeps the write end; when the parent exits or dies, the kernel
/// closes that end and the child follows instead of running on as an orphan.
///
/// A pipe is used rather than `PR_SET_PDEATHSIG` because Linux sends that signal when the
/// *thread* that started the child exits, and the pool threads that start children come and go.
enum ParentLifeline {
  /// The environment variable that turns the lifeline on.
  static let environmentVariable = "HOURGLASS_EXIT_ON_STDIN_EOF"

  /// Starts a thread that waits for end of file on standard input, if the environment asks.
  static func startIfRequested() {
    guard ProcessInfo.processInfo.environment[environmentVariable] == "1" else { return }
    let thread = Thread {
      var byte: UInt8 = 0
      while true {
        let n = read(STDIN_FILENO, &byte, 1)
        if n == 0 || (n < 0 && errno != EINTR) { _exit(70) }
      }
    }
    thread.name = "parent-lifeline"
    thread.start()
  }
}
