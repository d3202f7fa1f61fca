//! Tests of `loader`.

use super::*;

fn hub(id: &str, rev: Option<&str>, file: Option<&str>) -> HubRef {
    HubRef {
        repo_id: id.into(),
        revision: rev.map(Into::into),
        file: file.map(Into::into),
    }
}

#[test]
fn hub_ids_parse_with_revision_and_file() {
    assert_eq!(parse_hub_ref("org/name"), Ok(hub("org/name", None, None)));
    assert_eq!(
        parse_hub_ref("HuggingFaceTB/SmolLM2-135M-Instruct@v1.0"),
        Ok(hub(
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            Some("v1.0"),
            None
        ))
    );
    assert_eq!(
        parse_hub_ref("org/name:model-Q4_K_M.gguf"),
        Ok(hub("org/name", None, Some("model-Q4_K_M.gguf")))
    );
    assert_eq!(
        parse_hub_ref("org/name@refs/pr/1:sub/m.gguf"),
        Ok(hub("org/name", Some("refs/pr/1"), Some("sub/m.gguf")))
    );
}

#[test]
fn bad_hub_ids_say_why() {
    for bad in [
        "name-only",
        "a/b/c",
        "/name",
        "org/",
        "org/na me",
        "org/-name",
        "org/na--me",
        "org/name@",
        "org/name:",
        "org/name@a b",
        "org/name@../x",
        "org/name:../x.gguf",
        "org/name:/abs.gguf",
    ] {
        assert!(parse_hub_ref(bad).is_err(), "{bad} parsed");
    }
    let long = format!("org/{}", "x".repeat(100));
    assert!(parse_hub_ref(&long).unwrap_err().contains("96"));
}

#[test]
fn references_split_into_paths_ids_and_errors() {
    assert!(matches!(
        parse_reference("  "),
        Err(LoadError::EmptyReference)
    ));
    // Existing paths win, even when spelled like an id.
    assert_eq!(
        parse_reference("src/lib.rs").unwrap(),
        ModelRef::Path("src/lib.rs".into())
    );
    assert!(matches!(parse_reference("org/name"), Ok(ModelRef::Hub(_))));
    for missing in ["/nope/x.gguf", "./x", "../x", "x.gguf", "dir/x.GGUF", "~/x"] {
        assert!(
            matches!(parse_reference(missing), Err(LoadError::NotFound { .. })),
            "{missing}"
        );
    }
    let err = parse_reference("justaword").unwrap_err();
    assert!(matches!(err, LoadError::BadReference { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("justaword") && msg.contains("org/name[@revision][:file.gguf]"),
        "{msg}"
    );
}

#[test]
fn quant_tags_match_whole_tags_only() {
    assert!(has_quant_tag("gemma-3-270m-it-Q4_K_M.gguf", "Q4_K_M"));
    assert!(has_quant_tag("smollm2.q4_0.gguf", "Q4_0"));
    assert!(!has_quant_tag("model-Q4_0_4_4.gguf", "Q4_0"));
    assert!(!has_quant_tag("model-IQ4_0.gguf", "Q4_0"));
    assert!(!has_quant_tag("model-Q4_K_M_L.gguf", "Q4_K_M"));
}

#[test]
fn gguf_preference_order() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = names(&["m-Q8_0.gguf", "m-Q4_0.gguf", "m-Q4_K_M.gguf", "m-F16.gguf"]);
    assert_eq!(pick_gguf(&all, "x").unwrap(), "m-Q4_K_M.gguf");
    let no_kqm = names(&["m-Q8_0.gguf", "m-Q4_0.gguf", "m-F16.gguf"]);
    assert_eq!(pick_gguf(&no_kqm, "x").unwrap(), "m-Q4_0.gguf");
    let with_projector = names(&["mmproj-m-Q8_0.gguf", "m-F16.gguf"]);
    assert_eq!(pick_gguf(&with_projector, "x").unwrap(), "m-F16.gguf");
    let unpreferred = names(&["m-F16.gguf", "m-Q5_K_M.gguf"]);
    let err = pick_gguf(&unpreferred, "repo x").unwrap_err().to_string();
    assert!(
        err.contains("m-F16.gguf, m-Q5_K_M.gguf") && err.contains("repo x"),
        "{err}"
    );
    let twins = names(&["a-Q4_K_M.gguf", "b-Q4_K_M.gguf", "a-Q8_0.gguf"]);
    let err = pick_gguf(&twins, "x").unwrap_err().to_string();
    assert!(err.contains("a-Q4_K_M.gguf, b-Q4_K_M.gguf"), "{err}");
}

#[test]
fn offline_flag_follows_python_truthiness() {
    for yes in ["1", "true", "TRUE", "yes", "on", " 1 "] {
        assert!(env_flag_is_true(yes), "{yes}");
    }
    for no in ["0", "false", "", "off", "no"] {
        assert!(!env_flag_is_true(no), "{no}");
    }
}

#[test]
fn load_error_stays_small() {
    // Callers return it in every Result (clippy::result_large_err draws the line at 128).
    assert!(std::mem::size_of::<LoadError>() <= 128);
}

#[test]
fn repo_folder_uses_double_dashes() {
    assert_eq!(
        repo_cache_dir(Path::new("/c"), "org/name"),
        PathBuf::from("/c/models--org--name")
    );
}
