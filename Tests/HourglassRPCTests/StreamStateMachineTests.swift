import NIOCore
import Testing

@testable import HourglassRPC

@Suite("Stream state machine")
struct StreamStateMachineTests {
  private func server(credit: Int = 2, maxMessage: Int = 100) -> StreamStateMachine {
    StreamStateMachine(role: .server, sendCredit: credit, receiveCredit: credit, maxMessageSize: maxMessage)
  }

  @Test("reassembles a fragmented message")
  func fragments() throws {
    var machine = server()
    #expect(try machine.receiveMessage(ByteBuffer(bytes: [1, 2]), flags: .more) == .none)
    #expect(try machine.receiveMessage(ByteBuffer(bytes: [3]), flags: .more) == .none)
    let action = try machine.receiveMessage(ByteBuffer(bytes: [4]), flags: .endStream)
    #expect(action == .deliver(ByteBuffer(bytes: [1, 2, 3, 4]), endStream: true))
    #expect(machine.state == .halfClosedRemote)
    #expect(machine.receiveCredit == 1)
  }

  @Test("an empty END_STREAM frame half-closes without a message")
  func bareHalfClose() throws {
    var machine = server()
    #expect(try machine.receiveMessage(ByteBuffer(), flags: .endStream) == .endOfMessages)
    #expect(machine.state == .halfClosedRemote)
    #expect(machine.receiveCredit == 2)
  }

  @Test("an empty frame without flags is an empty message")
  func emptyMessage() throws {
    var machine = server()
    #expect(try machine.receiveMessage(ByteBuffer(), flags: []) == .deliver(ByteBuffer(), endStream: false))
  }

  @Test("refuses a message past the size limit while it is still arriving")
  func tooLarge() throws {
    var machine = server(maxMessage: 10)
    _ = try machine.receiveMessage(ByteBuffer(bytes: Array(repeating: 0, count: 8)), flags: .more)
    #expect {
      try machine.receiveMessage(ByteBuffer(bytes: Array(repeating: 0, count: 8)), flags: .more)
    } throws: { ($0 as? ProtocolViolation)?.kind == .messageTooLarge }
  }

  @Test("refuses a message sent without credit")
  func receiveWithoutCredit() throws {
    var machine = server(credit: 1)
    _ = try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: [])
    #expect {
      try machine.receiveMessage(ByteBuffer(bytes: [2]), flags: [])
    } throws: { ($0 as? ProtocolViolation)?.kind == .creditExceeded }
    machine = server(credit: 1)
    _ = try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: [])
    machine.grantReceiveCredit(1)
    #expect(try machine.receiveMessage(ByteBuffer(bytes: [2]), flags: []) == .deliver(ByteBuffer(bytes: [2]), endStream: false))
  }

  @Test("sending waits for credit and resumes when CREDIT arrives")
  func sendCredit() throws {
    var machine = server(credit: 1)
    #expect(try machine.sendMessage(endStream: false))
    #expect(try machine.sendMessage(endStream: false) == false)
    try machine.receiveCredit(3)
    #expect(try machine.sendMessage(endStream: false))
    #expect(machine.sendCredit == 2)
  }

  @Test("a zero or overflowing CREDIT is malformed")
  func badCredit() {
    var machine = server()
    #expect(throws: ProtocolViolation.self) { try machine.receiveCredit(0) }
    #expect(throws: ProtocolViolation.self) { try machine.receiveCredit(Int(Int32.max)) }
  }

  @Test("MESSAGE after the peer's END_STREAM is unexpected")
  func afterEnd() throws {
    var machine = server()
    _ = try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: .endStream)
    #expect {
      try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: [])
    } throws: { ($0 as? ProtocolViolation)?.kind == .unexpectedFrame }
  }

  @Test("MORE together with END_STREAM is malformed")
  func moreAndEnd() {
    var machine = server()
    #expect(throws: ProtocolViolation.self) { try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: [.more, .endStream]) }
  }

  @Test("the client's stream: headers once, trailers close it")
  func clientLifecycle() throws {
    var machine = StreamStateMachine(role: .client, sendCredit: 4, receiveCredit: 4, maxMessageSize: 100)
    #expect(try machine.sendMessage(endStream: true))
    #expect(machine.state == .halfClosedLocal)
    try machine.receiveResponseHeaders()
    #expect(throws: ProtocolViolation.self) { try machine.receiveResponseHeaders() }
    _ = try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: [])
    try machine.receiveTrailers()
    #expect(machine.state == .closed)
    #expect(throws: ProtocolViolation.self) { try machine.receiveTrailers() }
  }

  @Test("a client ignores END_STREAM on the server's MESSAGE (the client's flag only): the TRAILERS after it still close the stream")
  func clientIgnoresEndStream() throws {
    var machine = StreamStateMachine(role: .client, sendCredit: 4, receiveCredit: 4, maxMessageSize: 100)
    #expect(try machine.sendMessage(endStream: true))
    let action = try machine.receiveMessage(ByteBuffer(bytes: [1]), flags: [.endStream])
    guard case .deliver(_, let endStream) = action else {
      Issue.record("not delivered: \(action)")
      return
    }
    #expect(!endStream)
    #expect(machine.state == .halfClosedLocal)
    // Nor is MORE with it an error from a server: the flag is simply not there for a client.
    _ = try machine.receiveMessage(ByteBuffer(bytes: [2]), flags: [.more, .endStream])
    _ = try machine.receiveMessage(ByteBuffer(bytes: [3]), flags: [])
    try machine.receiveTrailers()
    #expect(machine.state == .closed)
  }

  @Test("servers may not receive TRAILERS; clients may not send them")
  func trailersDirection() {
    var server = server()
    #expect(throws: ProtocolViolation.self) { try server.receiveTrailers() }
    var client = StreamStateMachine(role: .client, sendCredit: 1, receiveCredit: 1, maxMessageSize: 10)
    #expect(throws: ProtocolViolation.self) { try client.sendTrailers() }
  }

  @Test("the server's trailers close the stream; nothing is sent after")
  func serverTrailers() throws {
    var machine = server()
    try machine.sendTrailers()
    #expect(machine.state == .closed)
    #expect(throws: ProtocolViolation.self) { try machine.sendMessage(endStream: false) }
  }
}
