//! Times the encoder's CPU attention kernel against libtorch's `scaled_dot_product_attention`
//! on one MiniLM layer's shapes (32 sequences of 258 tokens, 12 heads of 32), fp32.
//!
//! usage: cargo run --release -p labelfleet-slm --example attention_bench [THREADS]

use labelfleet_slm::attention;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const REPEATS: u32 = 5;

fn best_ms(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..REPEATS {
                f();
            }
            start.elapsed().as_secs_f64() * 1e3 / f64::from(REPEATS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let threads = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    labelfleet_slm::device::configure_process();
    tch::set_num_threads(threads);
    let _guard = tch::no_grad_guard();
    let (b, t, heads, width) = (32i64, 258i64, 12i64, 384i64);
    let opts = (Kind::Float, Device::Cpu);
    let (q, k, v) = (
        Tensor::randn([b, t, width], opts),
        Tensor::randn([b, t, width], opts),
        Tensor::randn([b, t, width], opts),
    );
    let mask = Tensor::ones([b, t], (Kind::Bool, Device::Cpu));
    let gflop = 4.0 * (b * t * t * width) as f64 / 1e9;
    let kernel = best_ms(|| {
        let _out =
            attention::forward(&q, &k, &v, &mask, heads as usize).expect("the kernel runs here");
    });
    let split = |y: &Tensor| y.view([b, t, heads, width / heads]).transpose(1, 2);
    let libtorch = best_ms(|| {
        let a = Tensor::scaled_dot_product_attention(
            &split(&q),
            &split(&k),
            &split(&v),
            Some(&mask.view([b, 1, 1, t])),
            0.0,
            false,
            None,
            false,
        );
        let _ = a.transpose(1, 2).reshape([b, t, width]);
    });
    println!("| implementation | ms per layer | GFLOP/s |");
    println!("|---|---:|---:|");
    for (name, ms) in [
        ("labelfleet kernel", kernel),
        ("libtorch scaled_dot_product_attention", libtorch),
    ] {
        println!("| {name} | {ms:.2} | {:.0} |", gflop / ms * 1e3);
    }
    println!(
        "{threads} threads, {b} x {t} tokens, {heads} heads of {}",
        width / heads
    );
}
