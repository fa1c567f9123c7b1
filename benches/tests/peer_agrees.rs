//! The peer adapter must do the same work as the engine on the benchmark flow, or the ratio
//! means nothing: compare top of book after every command.
use caldera_benches::{Book, CalderaBook, LobsterBook};
use caldera_engine::Side;
use caldera_testkit::flow::{generate, FlowConfig};

#[test]
fn lobster_and_caldera_agree_on_top_of_book_for_the_flow() {
    let cfg = FlowConfig::default();
    let cmds = generate(&cfg, 400_000);
    let mut a = CalderaBook::new(cfg.engine_config());
    let mut b = LobsterBook::new(cfg.engine_config().max_orders as usize);
    for (i, c) in cmds.iter().enumerate() {
        a.apply(c);
        b.apply(c);
        let ours = (
            a.engine().best_bid(1).map(|x| x.0),
            a.engine().best_ask(1).map(|x| x.0),
        );
        let theirs = b.top();
        assert_eq!(ours, theirs, "top of book differs after command {i}: {c:?}");
        let _ = Side::Buy;
    }
    assert_eq!(a.trades(), b.trades());
}
