//! Parity of the engine with Python `transformers` on the same weights and inputs (fp32).
//! References come from `scripts/make_reference.py` (run by the set-up).

mod common;

use common::{max_abs_diff, model_dir, reference};
use labelfleet_slm::decoder::Attention;
use labelfleet_slm::generate::{generate, generate_samples, SamplingParams};
use labelfleet_slm::{
    ChatMessage, CrossEncoder, DecoderLm, EncoderGrader, Grader, Pair, Placement, TextTokenizer,
    TopRows,
};
use tch::{Kind, Tensor};

fn chats(meta: &serde_json::Value) -> Vec<Vec<ChatMessage>> {
    meta["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage {
                    role: m["role"].as_str().unwrap().into(),
                    content: m["content"].as_str().unwrap().into(),
                })
                .collect()
        })
        .collect()
}

#[test]
fn smollm2_chat_template_and_tokens_match_transformers() {
    let (tensors, meta) = reference("smollm2");
    let tok = TextTokenizer::from_dir(&model_dir("smollm2")).unwrap();
    for (i, chat) in chats(&meta).iter().enumerate() {
        let text = tok.render_chat(chat, true).unwrap();
        assert_eq!(
            text,
            meta["texts"][i].as_str().unwrap(),
            "chat {i}: rendered prompt differs"
        );
        let ids = tok.encode(&text).unwrap();
        let want = Vec::<i64>::try_from(&tensors[&format!("ids_{i}")]).unwrap();
        assert_eq!(ids, want, "chat {i}: token ids differ");
    }
}

#[test]
fn smollm2_logits_match_transformers_within_1e3() {
    let (tensors, _) = reference("smollm2");
    let lm = DecoderLm::load(&model_dir("smollm2"), Placement::cpu(), 2048).unwrap();
    let mut worst = 0.0f64;
    for i in 0..3 {
        let ids = tensors[&format!("ids_{i}")].unsqueeze(0);
        let want = &tensors[&format!("logits_{i}")];
        let got = tch::no_grad(|| {
            lm.logits(&lm.forward(&ids, &Attention::Causal, None).unwrap())
                .squeeze_dim(0)
        });
        assert_eq!(got.size(), want.size());
        let d = max_abs_diff(&got, want);
        worst = worst.max(d);
        // and the next-token choice agrees everywhere
        assert_eq!(
            Vec::<i64>::try_from(got.argmax(-1, false)).unwrap(),
            Vec::<i64>::try_from(want.argmax(-1, false)).unwrap()
        );
    }
    println!("smollm2 max |logit diff| = {worst:.2e}");
    assert!(worst <= 1e-3, "max abs logit difference {worst} > 1e-3");
}

#[test]
fn smollm2_right_padded_batch_matches_single_rows() {
    // Scoring pads on the right and reads each row at its own last token: padding must not
    // change any real position.
    let (tensors, _) = reference("smollm2");
    let lm = DecoderLm::load(&model_dir("smollm2"), Placement::cpu(), 2048).unwrap();
    let rows: Vec<Vec<i64>> = (0..3)
        .map(|i| Vec::<i64>::try_from(&tensors[&format!("ids_{i}")]).unwrap())
        .collect();
    let t = rows.iter().map(|r| r.len()).max().unwrap();
    let mut flat = vec![];
    for r in &rows {
        flat.extend(r);
        flat.extend(std::iter::repeat_n(2i64, t - r.len()));
    }
    let batch = Tensor::from_slice(&flat).view([3, t as i64]);
    let hidden = tch::no_grad(|| lm.forward(&batch, &Attention::Causal, None).unwrap());
    for (i, r) in rows.iter().enumerate() {
        let got = lm.logits(&hidden.get(i as i64).narrow(0, 0, r.len() as i64));
        let d = max_abs_diff(&got, &tensors[&format!("logits_{i}")]);
        assert!(d <= 1e-3, "row {i}: padded batch differs by {d}");
    }
}

/// SmolLM2 with its tokenizer, the references of `transformers` and their three prompts.
fn smollm2_generation_references() -> (
    std::collections::HashMap<String, Tensor>,
    DecoderLm,
    TextTokenizer,
    Vec<Vec<i64>>,
) {
    let (tensors, _) = reference("smollm2");
    let dir = model_dir("smollm2");
    let lm = DecoderLm::load(&dir, Placement::cpu(), 2048).unwrap();
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let prompts: Vec<Vec<i64>> = (0..3)
        .map(|i| Vec::<i64>::try_from(&tensors[&format!("ids_{i}")]).unwrap())
        .collect();
    (tensors, lm, tok, prompts)
}

#[test]
fn smollm2_batched_greedy_generation_matches_transformers() {
    let (tensors, lm, tok, prompts) = smollm2_generation_references();
    let params = SamplingParams {
        max_new_tokens: 24,
        ..Default::default()
    };
    // all three prompts in one left-padded batch
    let got = generate(&lm, &prompts, &params, &tok.stop_ids, tok.pad_id).unwrap();
    for (i, g) in got.iter().enumerate() {
        let want = Vec::<i64>::try_from(&tensors[&format!("gen_{i}")]).unwrap();
        assert_eq!(
            g,
            &want,
            "prompt {i}: {:?} vs {:?}",
            tok.decode(g, false),
            tok.decode(&want, false)
        );
    }
}

fn minilm_grader(dir: &std::path::Path) -> EncoderGrader {
    EncoderGrader::load(
        dir,
        &labelfleet_slm::grading::default_grade_labels(),
        Placement::cpu(),
        512,
    )
    .unwrap()
}

#[test]
fn minilm_hidden_states_match_transformers_within_1e3() {
    let (tensors, meta) = reference("minilm");
    let dir = model_dir("minilm");
    let grader = minilm_grader(&dir);
    let enc = CrossEncoder::load(&dir, 4, Placement::cpu()).unwrap();
    assert!(enc
        .initialized
        .iter()
        .all(|n| n.starts_with("classifier.") || n.starts_with("bert.pooler.")));
    let mut worst = 0.0f64;
    for (i, pair) in meta["pairs"].as_array().unwrap().iter().enumerate() {
        let p = Pair {
            id: format!("pair{i}"),
            query: pair[0].as_str().unwrap().into(),
            title: None,
            body: pair[1].as_str().unwrap().into(),
            metadata: Default::default(),
        };
        let e = grader.encode_pair(&p).unwrap();
        assert_eq!(
            e.ids,
            Vec::<i64>::try_from(&tensors[&format!("ids_{i}")]).unwrap(),
            "pair {i}: ids"
        );
        assert_eq!(
            e.type_ids,
            Vec::<i64>::try_from(&tensors[&format!("type_ids_{i}")]).unwrap(),
            "pair {i}: types"
        );
        let ids = Tensor::from_slice(&e.ids).unsqueeze(0);
        let types = Tensor::from_slice(&e.type_ids).unsqueeze(0);
        let mask = ids.ones_like().to_kind(Kind::Int64);
        let hidden = tch::no_grad(|| {
            enc.encode(&ids, &types, &mask, false, TopRows::All)
                .unwrap()
        })
        .squeeze_dim(0);
        worst = worst.max(max_abs_diff(&hidden, &tensors[&format!("hidden_{i}")]));
    }
    println!("minilm max |hidden diff| = {worst:.2e}");
    assert!(
        worst <= 1e-3,
        "max abs hidden-state difference {worst} > 1e-3"
    );
}

#[test]
fn minilm_first_token_path_matches_the_full_encoder_on_a_padded_batch() {
    let (_, meta) = reference("minilm");
    let dir = model_dir("minilm");
    let enc = CrossEncoder::load(&dir, 4, Placement::cpu()).unwrap();
    let grader = minilm_grader(&dir);
    let encoded: Vec<_> = meta["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            grader
                .encode_pair(&Pair {
                    id: format!("pair{i}"),
                    query: pair[0].as_str().unwrap().into(),
                    title: None,
                    body: pair[1].as_str().unwrap().into(),
                    metadata: Default::default(),
                })
                .unwrap()
        })
        .collect();
    let t = encoded.iter().map(|e| e.ids.len()).max().unwrap();
    let lens: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
    assert!(
        lens.iter().any(|&l| l < t),
        "the batch needs padding: {lens:?}"
    );
    let pad = |rows: Vec<Vec<i64>>| {
        let flat: Vec<i64> = rows
            .into_iter()
            .flat_map(|mut r| {
                r.resize(t, 0);
                r
            })
            .collect();
        Tensor::from_slice(&flat).view([-1, t as i64])
    };
    let ids = pad(encoded.iter().map(|e| e.ids.clone()).collect());
    let types = pad(encoded.iter().map(|e| e.type_ids.clone()).collect());
    let mask = pad(encoded.iter().map(|e| vec![1; e.ids.len()]).collect());
    let (full, cls) = tch::no_grad(|| {
        (
            enc.encode(&ids, &types, &mask, false, TopRows::All)
                .unwrap()
                .select(1, 0),
            enc.encode(&ids, &types, &mask, false, TopRows::First)
                .unwrap()
                .squeeze_dim(1),
        )
    });
    assert_eq!(cls.size(), full.size());
    let diff = max_abs_diff(&cls, &full);
    println!("first-token path vs full encoder: max |diff| = {diff:.2e} over lengths {lens:?}");
    assert!(diff <= 1e-5, "first-token path differs by {diff}");
}

#[test]
fn smollm2_grader_prefix_cache_matches_full_forward() {
    // Inference reuses the keys/values of the shared system prompt; the grades must equal a
    // full forward over every token.
    use labelfleet_slm::grading::{default_grade_labels, DecoderGrader};
    let dir = model_dir("smollm2");
    let grader = DecoderGrader::load(&dir, &default_grade_labels(), Placement::cpu(), 512).unwrap();
    let pairs: Vec<Pair> = [
        (
            "vacation policy",
            "HR handbook",
            "Employees accrue 25 days of paid leave per year.",
        ),
        (
            "gpu quota request",
            "Cluster guide",
            "Ask the platform team for GPU quota via the portal form.",
        ),
        (
            "q3 revenue emea",
            "Finance report",
            "Revenue in EMEA grew 12% in the third quarter, led by Germany and France.",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(i, (q, t, b))| Pair {
        id: format!("p{i}"),
        query: q.to_string(),
        title: Some(t.to_string()),
        body: b.to_string(),
        metadata: [("author".to_string(), "Jane Doe".to_string())].into(),
    })
    .collect();
    let enc: Vec<_> = pairs
        .iter()
        .map(|p| grader.encode_pair(p).unwrap())
        .collect();
    // the encoding equals tokenizing the whole prompt at once
    for (p, e) in pairs.iter().zip(&enc) {
        assert_eq!(
            grader
                .tokenizer
                .encode(&grader.prompt_text(p).unwrap())
                .unwrap(),
            e.ids
        );
    }
    let refs: Vec<_> = enc.iter().collect();
    let cached = tch::no_grad(|| grader.grade_logits(&refs, false).unwrap());
    let grade_ids = Tensor::from_slice(&grader.grade_token_ids());
    for (i, e) in enc.iter().enumerate() {
        let ids = Tensor::from_slice(&e.ids).unsqueeze(0);
        let hidden = tch::no_grad(|| grader.lm.forward(&ids, &Attention::Causal, None).unwrap());
        let full = grader
            .lm
            .token_logits(&hidden.get(0).get(e.ids.len() as i64 - 1), &grade_ids);
        let d = max_abs_diff(&full, &cached.get(i as i64));
        assert!(
            d <= 1e-4,
            "pair {i}: prefix-cached grade logits differ by {d}"
        );
    }
}

#[test]
fn samples_of_one_prompt_share_its_prefill_and_match_transformers() {
    let (tensors, lm, tok, prompts) = smollm2_generation_references();
    let greedy = SamplingParams {
        max_new_tokens: 24,
        ..Default::default()
    };
    let draw = |prompts: &[Vec<i64>], counts: &[usize], params: &SamplingParams| {
        generate_samples(&lm, prompts, counts, params, &tok.stop_ids, tok.pad_id)
    };
    // the greedy batch of the test above, as samples: each prompt read once, its cache copied
    // to each of its samples; prompt 1 not sampled
    let got = draw(&prompts, &[2, 0, 3], &greedy).unwrap();
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [2, 0, 3]);
    for i in [0, 2] {
        let want = Vec::<i64>::try_from(&tensors[&format!("gen_{i}")]).unwrap();
        for (j, g) in got[i].iter().enumerate() {
            assert_eq!(
                g,
                &want,
                "prompt {i}, sample {j}: {:?}",
                tok.decode(g, false)
            );
        }
    }
    // sampled: as many samples as asked for, and not one sample copied
    let sampled = SamplingParams {
        max_new_tokens: 12,
        temperature: 0.8,
        top_p: 0.95,
        seed: 7,
    };
    let got = draw(&prompts[..1], &[6], &sampled).unwrap();
    assert_eq!(got[0].len(), 6);
    let distinct: std::collections::HashSet<&Vec<i64>> = got[0].iter().collect();
    assert!(
        distinct.len() >= 2,
        "six samples, all the same: {:?}",
        got[0]
    );
    // the same seed draws the same samples
    let again = draw(&prompts[..1], &[6], &sampled).unwrap();
    assert_eq!(got, again);
    let err = draw(&prompts, &[1], &greedy);
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("1 sample counts for 3 prompts"));
}
