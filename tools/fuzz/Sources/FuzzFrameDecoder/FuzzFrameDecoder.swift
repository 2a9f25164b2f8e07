#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The checks this process runs: `HOURGLASS_FUZZ_CHECKS=decoder` fuzzes the frame decoder alone
/// (faster), `pipeline` the server pipeline alone; anything else, or nothing, runs both.
let selectedChecks: FrameFuzzHarness.Checks = {
  switch getenv("HOURGLASS_FUZZ_CHECKS").map({ String(cString: $0) }) {
  case "decoder": .decoder
  case "pipeline": .pipeline
  default: .all
  }
}()

/// libFuzzer's entry point: one input, every invariant of ``FrameFuzzHarness``. A broken
/// invariant traps, so libFuzzer saves the input as a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameDecoder(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
  let input = Array(UnsafeRawBufferPointer(start: start, count: count))
  let failures = FrameFuzzHarness.check(input, selectedChecks)
  if !failures.isEmpty {
    fatalError("hourglass/1 fuzz invariant broken:\n" + failures.joined(separator: "\n"))
  }
  return 0
}
