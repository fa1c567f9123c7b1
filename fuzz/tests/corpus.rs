//! Every committed corpus input (seeds, and each crash the fuzzer ever found, kept as a
//! regression) through its target, then a short random smoke of every target.

use caldera_fuzz::TARGETS;
use caldera_testkit::flow::Rng;
use std::path::Path;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, body) in TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            body(&data);
            n += 1;
        }
        assert!(n > 0, "no corpus for {name}");
    }
}

#[test]
fn random_and_mutated_inputs_pass_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut rng = Rng::new(0xf022);
    for (name, body) in TARGETS {
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(root.join(name))
            .expect("corpus")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
            .collect();
        for i in 0..300 {
            let mut data = seeds[i % seeds.len()].clone();
            for _ in 0..=rng.below(8) {
                if data.is_empty() {
                    data.push(rng.next_u64() as u8);
                }
                let at = rng.below(data.len() as u64) as usize;
                match rng.below(3) {
                    0 => data[at] = rng.next_u64() as u8,
                    1 => data.truncate(at),
                    _ => data.insert(at, rng.next_u64() as u8),
                }
            }
            body(&data);
        }
    }
}
