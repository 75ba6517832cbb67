//! (g) URL construction: partysocket's host normalisation and scheme choice, percent-encoding,
//! and the session id sent as both `_pk` and `id`.

use partyroom_client::{ClientOptions, Protocol, WorldOptions};

fn url(host: &str) -> String {
    ClientOptions::new(host, "demo").session_id("s").url()
}

#[test]
fn spec_examples() {
    assert_eq!(
        ClientOptions::new("https://example.com", "demo:world-default:17-5")
            .party("shard")
            .session_id("sess1")
            .url(),
        "wss://example.com/parties/shard/demo:world-default:17-5?_pk=sess1&id=sess1"
    );
    assert_eq!(
        ClientOptions::new("http://localhost:3000/", "demo")
            .session_id("u")
            .query("name", "Sam")
            .url(),
        "ws://localhost:3000/parties/main/demo?_pk=u&id=u&name=Sam"
    );
    // `localhost` without a port is not local for partysocket.
    assert_eq!(
        url("localhost"),
        "wss://localhost/parties/main/demo?_pk=s&id=s"
    );
}

#[test]
fn scheme_choice() {
    let ws = [
        "localhost:1999",
        "127.0.0.1:80",
        "192.168.1.20",
        "10.0.0.1:3000",
        "172.16.0.1",
        "172.31.255.1:80",
        "[::ffff:7f00:1]:8080",
        "http://127.0.0.1:3000",
        "wss://localhost:3000/",
        // partysocket compares the second octet as a string: "2" is between "16" and "31".
        "172.2.0.1",
    ];
    for host in ws {
        assert!(url(host).starts_with("ws://"), "{host}: {}", url(host));
    }
    let wss = [
        "example.com",
        "127.0.0.1",
        "172.15.0.1",
        "172.32.0.1",
        "172.100.0.1",
        "11.0.0.1",
        "192.169.0.1",
        "ws://example.com:8080",
        "http://game.example.com/",
    ];
    for host in wss {
        assert!(url(host).starts_with("wss://"), "{host}: {}", url(host));
    }
    // The explicit protocol wins; the host keeps its normalisation.
    assert_eq!(
        ClientOptions::new("ws://example.com:8080/", "demo")
            .session_id("s")
            .protocol(Protocol::Ws)
            .url(),
        "ws://example.com:8080/parties/main/demo?_pk=s&id=s"
    );
    assert_eq!(
        ClientOptions::new("localhost:3000", "demo")
            .session_id("s")
            .protocol(Protocol::Wss)
            .url(),
        "wss://localhost:3000/parties/main/demo?_pk=s&id=s"
    );
    assert_eq!(ClientOptions::new("10.1.2.3", "r").scheme(), Protocol::Ws);
    assert_eq!(ClientOptions::new("https://x.y", "r").bare_host(), "x.y");
}

#[test]
fn query_encoding() {
    let u = ClientOptions::new("localhost:3000", "demo")
        .session_id("a b&c=d/é")
        .query("name", "Sam & Ann/?#=+é")
        .query("we ird", "*-_.!~'()")
        .query("empty", "")
        .url();
    assert_eq!(
        u,
        "ws://localhost:3000/parties/main/demo?_pk=a%20b%26c%3Dd%2F%C3%A9&id=a%20b%26c%3Dd%2F%C3%A9\
         &name=Sam%20%26%20Ann%2F%3F%23%3D%2B%C3%A9&we%20ird=*-_.!~'()&empty="
    );
}

#[test]
fn reserved_keys_are_not_duplicated() {
    let u = ClientOptions::new("localhost:3000", "demo")
        .session_id("real")
        .query("id", "other")
        .query("_pk", "other")
        .query("x", "1")
        .url();
    assert_eq!(
        u,
        "ws://localhost:3000/parties/main/demo?_pk=real&id=real&x=1"
    );
}

#[test]
fn path_segments() {
    // Ids that work with partysocket are unchanged; characters that would break the path are
    // encoded.
    assert_eq!(
        ClientOptions::new("localhost:1", "a b/c?d#e%f")
            .party("p q")
            .session_id("s")
            .url(),
        "ws://localhost:1/parties/p%20q/a%20b%2Fc%3Fd%23e%25f?_pk=s&id=s"
    );
    assert_eq!(
        ClientOptions::new("localhost:1", "match-123:world-eu:1710000000000-4821")
            .session_id("s")
            .url(),
        "ws://localhost:1/parties/main/match-123:world-eu:1710000000000-4821?_pk=s&id=s"
    );
}

#[test]
fn default_session_is_a_fixed_uuid() {
    let options = ClientOptions::new("localhost:3000", "demo");
    let u1 = options.url();
    assert_eq!(u1, options.url(), "fixed for the options' lifetime");
    let query = u1.split_once('?').unwrap().1;
    let (pk, id) = query.split_once('&').unwrap();
    let session = pk.strip_prefix("_pk=").unwrap();
    assert_eq!(id, format!("id={session}"));
    assert_eq!(session.len(), 36);
    assert_eq!(session.matches('-').count(), 4);
    assert_ne!(
        ClientOptions::new("localhost:3000", "demo").url(),
        u1,
        "random per options"
    );
}

#[test]
fn world_url() {
    assert_eq!(
        WorldOptions::new("http://127.0.0.1:1/", "lobby")
            .world_id("world eu/1")
            .connect_url(),
        "http://127.0.0.1:1/parties/world/world%20eu%2F1/connect"
    );
    assert_eq!(
        WorldOptions::new("http://h:2", "lobby").connect_url(),
        "http://h:2/parties/world/world-default/connect"
    );
}
