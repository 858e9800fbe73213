//! Expression tests: the Flowcraft evaluator conformance table (spec §7.2 evaluator.test and
//! evaluator-property.test), the safe evaluator's JavaScript semantics, limits and fuzzing.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn scope(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Evaluates with the property evaluator; a parse failure counts as `undefined`, which is what
/// Flowcraft returns for every rejected form.
fn prop(expr: &str, ctx: Value) -> Option<Value> {
    Expression::parse(EvaluatorKind::Property, expr)
        .ok()
        .and_then(|e| e.evaluate(&scope(ctx)))
}

fn safe(expr: &str, ctx: Value) -> Option<Value> {
    match Expression::parse(EvaluatorKind::Safe, expr) {
        Ok(e) => e.evaluate(&scope(ctx)),
        Err(err) => panic!("{expr:?} should parse: {err}"),
    }
}

// --- PropertyEvaluator conformance -----------------------------------------------------------

#[test]
fn property_reads_top_level_and_nested_paths() {
    let cases = [
        ("a", json!({"a": 1}), Some(json!(1))),
        ("a.b", json!({"a": {"b": 2}}), Some(json!(2))),
        ("a.b.c", json!({"a": {"b": {"c": 3}}}), Some(json!(3))),
        (
            "result.output.status",
            json!({"result": {"output": {"status": "OK"}}}),
            Some(json!("OK")),
        ),
        (
            "context.user.isAdmin",
            json!({"context": {"user": {"isAdmin": true}}}),
            Some(json!(true)),
        ),
        ("a1", json!({"a1": "value"}), Some(json!("value"))),
        ("a_1", json!({"a_1": "value"}), Some(json!("value"))),
        ("a.b1", json!({"a": {"b1": "value"}}), Some(json!("value"))),
        (
            "123start",
            json!({"123start": "number"}),
            Some(json!("number")),
        ),
        ("$x", json!({"$x": 5}), Some(json!(5))),
        ("n", json!({"n": null}), Some(Value::Null)),
    ];
    for (expr, ctx, expected) in cases {
        assert_eq!(prop(expr, ctx), expected, "{expr}");
    }
}

#[test]
fn property_missing_or_null_paths_are_undefined() {
    let cases = [
        ("missing", json!({})),
        ("a.missing", json!({"a": {}})),
        ("a.b.c", json!({"a": {"b": null}})),
        ("result.output.status", json!({"result": {"output": null}})),
        ("name.nonexistent", json!({"name": "test"})),
        (
            "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z",
            json!({"a": 1, "b": 2}),
        ),
    ];
    for (expr, ctx) in cases {
        assert_eq!(prop(expr, ctx), None, "{expr}");
    }
}

#[test]
fn property_rejects_everything_but_dotted_paths() {
    let rejected = [
        "a()",
        "a + b",
        "a === b",
        "Math.random()",
        "eval(\"code\")",
        "Function(\"code\")",
        "require(\"module\")",
        "toString.call()",
        "a; b",
        "a, b",
        "a || b",
        "a && b",
        "a ? b : c",
        "!a",
        "~a",
        "a++",
        "++a",
        "a--",
        "--a",
        "new Object()",
        "delete a",
        "void a",
        "typeof a",
        "a instanceof Object",
        "a in b",
        "users[0].name",
        "data[0]",
        "with-dash",
        "a-b",
        "a.b-c",
        "with spaces",
        "🚀",
        "café",
        "",
        "name === \"test\"",
    ];
    for expr in rejected {
        assert!(
            Expression::parse(EvaluatorKind::Property, expr).is_err(),
            "{expr:?} should be rejected"
        );
    }
}

#[test]
fn property_blocks_inherited_names_and_reads_own_keys_only() {
    let ctx = json!({"a": 1, "b": 2, "obj": {}});
    for expr in [
        "__proto__",
        "constructor",
        "prototype",
        "process.env",
        "global",
        "window",
        "document",
        "obj.constructor",
        "obj.__proto__",
        "a.toString",
        "obj.hasOwnProperty",
    ] {
        assert_eq!(prop(expr, ctx.clone()), None, "{expr}");
    }
    // A real own key with such a name is readable.
    assert_eq!(
        prop("constructor", json!({"constructor": 7})),
        Some(json!(7))
    );
}

#[test]
fn property_only_dots_reads_the_empty_key() {
    assert_eq!(prop("...", json!({"name": "test"})), None);
    assert_eq!(prop("a..b", json!({"a": {"": {"b": 1}}})), Some(json!(1)));
}

#[test]
fn property_indexes_arrays_and_reads_lengths() {
    let data: Vec<i64> = (0..1000).collect();
    let ctx = json!({"data": data, "items": [{"name": "x"}], "s": "héllo", "firstItem": 0});
    assert_eq!(prop("data.length", ctx.clone()), Some(json!(1000)));
    assert_eq!(prop("data.999", ctx.clone()), Some(json!(999)));
    assert_eq!(prop("data.1000", ctx.clone()), None);
    assert_eq!(prop("data.01", ctx.clone()), None);
    assert_eq!(prop("items.0.name", ctx.clone()), Some(json!("x")));
    assert_eq!(prop("s.length", ctx.clone()), Some(json!(5)));
    assert_eq!(prop("s.1", ctx.clone()), Some(json!("é")));
    assert_eq!(prop("firstItem", ctx.clone()), Some(json!(0)));
    assert_eq!(prop("data.length.x", ctx), None);
}

#[test]
fn property_follows_twenty_levels_of_nesting() {
    let mut ctx = json!({"value": "deep"});
    let mut expr = "value".to_owned();
    for i in 0..20 {
        ctx = json!({ format!("level{i}"): ctx });
        expr = format!("level{i}.{expr}");
    }
    assert_eq!(prop(&expr, ctx), Some(json!("deep")));
}

#[test]
fn property_is_deterministic() {
    let e = Expression::parse(EvaluatorKind::Property, "a.b.c").ok();
    let ctx = scope(json!({"a": {"b": {"c": 42}}}));
    let results: Vec<_> = (0..3)
        .map(|_| e.as_ref().and_then(|e| e.evaluate(&ctx)))
        .collect();
    assert_eq!(results, vec![Some(json!(42)); 3]);
}

// --- Safe evaluator ---------------------------------------------------------------------------

#[test]
fn safe_does_arithmetic_and_logic() {
    let ctx = json!({"a": 5, "b": 3, "c": true, "d": false, "input": 5});
    let cases = [
        ("a + b", json!(8)),
        ("a * b", json!(15)),
        ("a - b * 2", json!(-1)),
        ("(a - b) * 2", json!(4)),
        ("a / 2", json!(2.5)),
        ("-a + +'2'", json!(-3)),
        ("a > b", json!(true)),
        ("a <= b", json!(false)),
        ("c && d", json!(false)),
        ("c || d", json!(true)),
        ("input * 2", json!(10)),
        ("!d && !!c", json!(true)),
        ("1 / 0", Value::Null),
        ("a % b", json!(2)),
        ("-7 % 3", json!(-1)),
        ("7.5 % 2", json!(1.5)),
    ];
    for (expr, expected) in cases {
        assert_eq!(safe(expr, ctx.clone()), Some(expected), "{expr}");
    }
}

#[test]
fn safe_logical_operators_return_operands() {
    let ctx = json!({"name": "x", "empty": "", "zero": 0});
    assert_eq!(safe("empty || name", ctx.clone()), Some(json!("x")));
    assert_eq!(safe("name && zero", ctx.clone()), Some(json!(0)));
    assert_eq!(
        safe("missing || 'default'", ctx.clone()),
        Some(json!("default"))
    );
    assert_eq!(safe("zero && missing.x", ctx), Some(json!(0)));
}

#[test]
fn safe_reads_paths_indexes_and_lengths() {
    let ctx = json!({
        "result": {"output": {"status": "OK", "items": [10, 20, 30]}},
        "context": {"with-dash": 1, "user": {"name": "Alice"}},
        "data": [1, 2, 3],
    });
    let cases = [
        ("result.output.status === 'OK'", json!(true)),
        ("result.output.items[1]", json!(20)),
        ("result.output.items.2", json!(30)),
        ("result.output.items.length", json!(3)),
        ("context[\"with-dash\"] + 1", json!(2)),
        ("context['user'].name", json!("Alice")),
        ("data[data.length - 1]", json!(3)),
        ("result.output.status.length", json!(2)),
        ("'abc'[1]", json!("b")),
    ];
    for (expr, expected) in cases {
        assert_eq!(safe(expr, ctx.clone()), Some(expected), "{expr}");
    }
}

#[test]
fn safe_undefined_names_and_missing_members_are_undefined() {
    let ctx = json!({"a": {"b": null}, "obj": {}});
    assert_eq!(safe("undefinedVariable", ctx.clone()), None);
    assert_eq!(safe("obj.missing", ctx.clone()), None);
    // Reading through null throws in JavaScript; the whole expression is undefined.
    assert_eq!(safe("a.b.c", ctx.clone()), None);
    assert_eq!(safe("!a.b.c", ctx.clone()), None);
    assert_eq!(safe("undefined", ctx.clone()), None);
    assert_eq!(safe("null", ctx), Some(Value::Null));
}

#[test]
fn safe_scope_is_own_keys_only() {
    let ctx = json!({"obj": {}, "s": "x", "n": 1});
    for expr in [
        "constructor",
        "__proto__",
        "toString",
        "hasOwnProperty",
        "obj.constructor",
        "obj.__proto__",
        "obj['__proto__']",
        "s.constructor",
        "n.toFixed",
        "Object",
        "process",
        "globalThis",
    ] {
        assert_eq!(safe(expr, ctx.clone()), None, "{expr}");
    }
}

#[test]
fn safe_loose_and_strict_equality_follow_javascript() {
    let ctx = json!({"arr": [1, 2], "obj": {"k": 1}, "one": "1", "nothing": null});
    let cases = [
        ("1 == '1'", true),
        ("1 === '1'", false),
        ("one == 1", true),
        ("one !== 1", true),
        ("0 == ''", true),
        ("0 == false", true),
        ("'' == false", true),
        ("null == undefined", true),
        ("null === undefined", false),
        ("nothing == 0", false),
        ("nothing == undefined", true),
        ("arr == '1,2'", true),
        ("arr === arr", true),
        ("obj == '[object Object]'", true),
        ("obj.k === 1", true),
        ("'a' != 'b'", true),
        ("true == 1", true),
        ("'b' > 'a'", true),
        ("'10' < '9'", true),
        ("'10' < 9", false),
        ("null >= 0", true),
        ("undefined < 1", false),
        ("undefined >= undefined", false),
    ];
    for (expr, expected) in cases {
        assert_eq!(safe(expr, ctx.clone()), Some(json!(expected)), "{expr}");
    }
}

#[test]
fn safe_plus_concatenates_when_either_side_is_a_string() {
    let ctx = json!({"n": 2, "s": "x", "arr": [1, 2], "f": 0.1});
    let cases = [
        ("'a' + n", json!("a2")),
        ("n + s", json!("2x")),
        ("n + n + s", json!("4x")),
        ("s + null + undefined + true", json!("xnullundefinedtrue")),
        ("arr + 1", json!("1,21")),
        ("f + 0.2", json!(0.30000000000000004)),
        ("'' + f * 3", json!("0.30000000000000004")),
        ("'' + 1e21", json!("1e+21")),
        ("'' + 1 / 0", json!("Infinity")),
        ("'' + 0 / 0", json!("NaN")),
        ("'\\u0041\\x42\\n'", json!("AB\n")),
    ];
    for (expr, expected) in cases {
        assert_eq!(safe(expr, ctx.clone()), Some(expected), "{expr}");
    }
}

#[test]
fn safe_conditional_and_precedence() {
    let ctx = json!({"x": 7});
    let cases = [
        ("x > 5 ? 'big' : 'small'", json!("big")),
        ("x > 9 ? 'big' : x > 6 ? 'mid' : 'small'", json!("mid")),
        ("1 + 2 * 3 === 7 && !(x < 0)", json!(true)),
        ("1 < 2 == true", json!(true)),
        ("2 - 1 - 1", json!(0)),
        ("12 / 3 / 2", json!(2)),
    ];
    for (expr, expected) in cases {
        assert_eq!(safe(expr, ctx.clone()), Some(expected), "{expr}");
    }
}

#[test]
fn safe_rejects_malformed_and_code_like_input() {
    for expr in [
        "",
        "   ",
        "a +",
        "(a",
        "a)",
        "a[0",
        "a.",
        "a b",
        "a = 1",
        "a; b",
        "a, b",
        "f()",
        "a => a",
        "`x`",
        "'unterminated",
        "a ?? b",
        "a?.b",
        "~a",
        "a & b",
        "new X",
        "1abc",
        "'\\x4'",
        "{}",
        "[1]",
        "a.'b'",
        "a..b",
    ] {
        assert!(
            Expression::parse(EvaluatorKind::Safe, expr).is_err(),
            "{expr:?} should be rejected"
        );
    }
}

#[test]
fn parse_errors_carry_an_offset() {
    let err = Expression::parse(EvaluatorKind::Safe, "a + * b").err();
    assert_eq!(err.map(|e| e.offset), Some(4));
    let err = Expression::parse(EvaluatorKind::Property, "ab-c").err();
    assert_eq!(err.map(|e| e.offset), Some(2));
}

#[test]
fn limits_reject_long_and_deep_input() {
    let long = "a".repeat(MAX_SOURCE_LEN + 1);
    assert!(Expression::parse(EvaluatorKind::Property, &long).is_err());
    assert!(Expression::parse(EvaluatorKind::Safe, &long).is_err());
    let ok = format!(
        "{}a{}",
        "(".repeat(MAX_NESTING - 1),
        ")".repeat(MAX_NESTING - 1)
    );
    assert!(Expression::parse(EvaluatorKind::Safe, &ok).is_ok());
    let deep = format!(
        "{}a{}",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    assert!(Expression::parse(EvaluatorKind::Safe, &deep).is_err());
    assert!(Expression::parse(EvaluatorKind::Safe, &"!".repeat(1000)).is_err());
    let chain = vec!["a"; 1000].join(" + ");
    assert!(Expression::parse(EvaluatorKind::Safe, &chain).is_err());
    let short_chain = vec!["a"; 100].join(" && ");
    assert!(Expression::parse(EvaluatorKind::Safe, &short_chain).is_ok());
}

#[test]
fn empty_transform_expression_is_undefined() {
    let e = Expression::undefined();
    assert_eq!(e.evaluate(&scope(json!({"input": 1}))), None);
    assert_eq!(e.source(), "");
}

#[test]
fn truthiness_matches_javascript() {
    let falsy = [
        json!(null),
        json!(false),
        json!(0),
        json!(0.0),
        json!(-0.0),
        json!(""),
    ];
    for v in falsy {
        assert!(!truthy(Some(&v)), "{v}");
    }
    assert!(!truthy(None));
    for v in [
        json!(true),
        json!(1),
        json!(-1),
        json!("0"),
        json!("false"),
        json!([]),
        json!({}),
    ] {
        assert!(truthy(Some(&v)), "{v}");
    }
}

#[test]
fn evaluator_kind_parses_its_names() {
    assert_eq!("safe".parse::<EvaluatorKind>(), Ok(EvaluatorKind::Safe));
    assert_eq!(
        "property".parse::<EvaluatorKind>(),
        Ok(EvaluatorKind::Property)
    );
    assert!("unsafe".parse::<EvaluatorKind>().is_err());
    assert_eq!(EvaluatorKind::default(), EvaluatorKind::Property);
}

// --- Robustness -------------------------------------------------------------------------------

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parse_and_evaluate_never_panic_on_arbitrary_text(src in ".{0,64}", ctx in arb_json()) {
        let ctx = scope(json!({"a": ctx.clone(), "b": ctx, "c": [1, "x", null]}));
        for kind in [EvaluatorKind::Property, EvaluatorKind::Safe] {
            if let Ok(e) = Expression::parse(kind, &src) {
                let _ = e.evaluate(&ctx);
            }
        }
    }

    #[test]
    fn safe_evaluate_never_panics_on_operator_soup(
        src in r"[abc0-9'. ()\[\]!=<>+*/?:&|-]{0,48}",
        ctx in arb_json(),
    ) {
        let ctx = scope(json!({"a": ctx.clone(), "b": ctx, "c": "text"}));
        if let Ok(e) = Expression::parse(EvaluatorKind::Safe, &src) {
            let _ = e.evaluate(&ctx);
        }
    }

    #[test]
    fn property_paths_find_what_they_name(key in "[A-Za-z_$][A-Za-z0-9_$]{0,8}", v in arb_json()) {
        prop_assume!(!["true", "false", "null", "undefined"].contains(&key.as_str()));
        let ctx = scope(json!({ key.clone(): { "inner": v.clone() } }));
        let e = Expression::parse(EvaluatorKind::Property, &format!("{key}.inner"));
        prop_assert_eq!(e.ok().and_then(|e| e.evaluate(&ctx)), Some(v.clone()));
        let e = Expression::parse(EvaluatorKind::Safe, &format!("{key}.inner"));
        prop_assert_eq!(e.ok().and_then(|e| e.evaluate(&ctx)), Some(v));
    }
}
