import Testing

@testable import HourglassRPC

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
  private func limited(_ streams: Int) -> ConnectionSettings {
    var settings = ConnectionSettings.defaults
    settings.maxConcurrentStreams = streams
    return settings
  }

  @Test("the first frame must be SETTINGS, and only once")
  func settingsFirst() throws {
    var machine = ConnectionStateMachine(role: .server, localSettings: .defaults)
    #expect(throws: ProtocolViolation.self) { try machine.checkFrameAllowed(.headers) }
    try machine.receiveSettings(.defaults)
    try machine.checkFrameAllowed(.headers)
    #expect(throws: ProtocolViolation.self) { try machine.receiveSettings(.defaults) }
  }

  @Test("invalid settings are refused with the field named")
  func invalidSettings() {
    var machine = ConnectionStateMachine(role: .server, localSettings: .defaults)
    var settings = ConnectionSettings.defaults
    settings.maxFrameSize = 100
    #expect {
      try machine.receiveSettings(settings)
    } throws: { ($0 as? ProtocolViolation)?.message.contains("max_frame_size") == true }
  }

  @Test("server: client stream ids must be odd and increasing")
  func streamIDs() throws {
    var machine = ConnectionStateMachine(role: .server, localSettings: .defaults)
    try machine.receiveSettings(.defaults)
    #expect(try machine.acceptStream(1) == .accept)
    #expect(try machine.acceptStream(5) == .accept)
    #expect(throws: ProtocolViolation.self) { try machine.acceptStream(3) }
    #expect(throws: ProtocolViolation.self) { try machine.acceptStream(8) }
    #expect(machine.isKnownStream(3))
    #expect(!machine.isKnownStream(7))
  }

  @Test("server: a stream beyond the concurrency limit is refused, the connection stays")
  func concurrency() throws {
    var machine = ConnectionStateMachine(role: .server, localSettings: limited(2))
    try machine.receiveSettings(.defaults)
    #expect(try machine.acceptStream(1) == .accept)
    #expect(try machine.acceptStream(3) == .accept)
    guard case .refuse(let code, _) = try machine.acceptStream(5) else {
      Issue.record("the third stream was accepted")
      return
    }
    #expect(code == .resourceExhausted)
    _ = machine.streamClosed()
    #expect(try machine.acceptStream(7) == .accept)
  }

  @Test("client: opens odd ids and waits at the server's limit")
  func clientOpen() throws {
    var machine = ConnectionStateMachine(role: .client, localSettings: .defaults)
    try machine.receiveSettings(limited(2))
    #expect(machine.openStream() == .open(streamID: 1))
    #expect(machine.openStream() == .open(streamID: 3))
    #expect(machine.openStream() == .wait)
    _ = machine.streamClosed()
    #expect(machine.openStream() == .open(streamID: 5))
  }

  @Test("GOAWAY: the server refuses newer streams and closes when drained")
  func goAway() throws {
    var machine = ConnectionStateMachine(role: .server, localSettings: .defaults)
    try machine.receiveSettings(.defaults)
    #expect(try machine.acceptStream(1) == .accept)
    #expect(machine.sendGoAway() == 1)
    #expect(machine.sendGoAway() == nil)
    guard case .refuse(let code, _) = try machine.acceptStream(3) else {
      Issue.record("a stream after GOAWAY was accepted")
      return
    }
    #expect(code == .unavailable)
    let drained = machine.streamClosed()
    #expect(drained)
  }

  @Test("client: after GOAWAY no new streams")
  func clientGoAway() throws {
    var machine = ConnectionStateMachine(role: .client, localSettings: .defaults)
    try machine.receiveSettings(.defaults)
    #expect(machine.openStream() == .open(streamID: 1))
    let closeNow = machine.receiveGoAway(lastStreamID: 1)
    #expect(!closeNow)
    guard case .unavailable = machine.openStream() else {
      Issue.record("a stream opened after GOAWAY")
      return
    }
    let drained = machine.streamClosed()
    #expect(drained)
  }
}
