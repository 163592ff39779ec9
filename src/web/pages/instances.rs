//! Processes, their instances and the recycle bin.

use super::*;

pub(super) async fn processes(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    processes_page(&herald, &s, "", json!({})).await
}

pub(super) async fn processes_page(
    herald: &Herald,
    s: &SessionRecord,
    error: &str,
    form: Value,
) -> Response {
    match herald.processes(&s.caller).await {
        Ok(list) => {
            let views: Vec<Value> = list
                .into_iter()
                .map(|p| json!({"name": p.name.as_str(), "title": p.title, "instanceCount": p.instance_count, "createdAt": p.created_at}))
                .collect();
            page(
                "processes.html",
                s,
                "processes",
                context! { processes => views, error => error, form => form },
            )
        }
        Err(e) => error_page(Some(s), e),
    }
}

pub(super) async fn create_process(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let name = ProcessName::parse(field(&form, "name").trim())?;
        let title = ProcessTitle::parse(field(&form, "title"))?;
        herald.create_process(&s.caller, &name, &title).await
    }
    .await;
    match result {
        Ok(p) => see_other(&format!("/ui/processes/{}", p.name)),
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => {
            let kept = json!({"name": field(&form, "name"), "title": field(&form, "title")});
            let mut r = processes_page(&herald, &s, &e.to_string(), kept).await;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Cursor {
    cursor: Option<i64>,
}

pub(super) async fn process(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(name): Path<String>,
    Query(c): Query<Cursor>,
) -> Response {
    process_page(&herald, &s, &name, c.cursor, "").await
}

pub(super) async fn process_page(
    herald: &Herald,
    s: &SessionRecord,
    name: &str,
    cursor: Option<i64>,
    error: &str,
) -> Response {
    let result = async {
        let name = ProcessName::parse(name)?;
        let process = herald.process(&s.caller, &name).await?;
        let page = herald.instances(&s.caller, &name, cursor, 25).await?;
        Ok::<_, Error>((process, page))
    }
    .await;
    match result {
        Ok((p, list)) => page(
            "process.html",
            s,
            "processes",
            context! {
                process => json!({"name": p.name.as_str(), "title": p.title}),
                instances => to_json(&list.items),
                next_cursor => list.next_cursor,
                error => error,
            },
        ),
        Err(e) => error_page(Some(s), e),
    }
}

/// Key/value rows of a form as a JSON object: a value that parses as JSON is kept as JSON,
/// anything else as text; rows without a key are skipped.
pub(super) fn data_from_fields(form: &Fields) -> Result<serde_json::Map<String, Value>, Error> {
    let keys: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "key")
        .map(|(_, v)| v.as_str())
        .collect();
    let values: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "value")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut map = serde_json::Map::new();
    for (key, value) in keys.iter().zip(values.iter().chain(std::iter::repeat(&""))) {
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(value)
            .unwrap_or_else(|_| Value::String((*value).to_owned()));
        if map.insert(key.to_owned(), parsed).is_some() {
            return Err(Error::Invalid(format!("the field `{key}` appears twice")));
        }
    }
    Ok(map)
}

pub(super) async fn create_instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(name): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let process = ProcessName::parse(&name)?;
        let data = InstanceData::parse(Value::Object(data_from_fields(&form)?))?;
        herald
            .create_instance(&s.caller, &process, &data, None)
            .await
    }
    .await;
    match result {
        Ok(i) => see_other(&format!("/ui/instances/{}", i.id)),
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => process_page(&herald, &s, &name, None, &e.to_string()).await,
    }
}

pub(super) async fn instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
) -> Response {
    instance_page(&herald, &s, &id, "").await
}

pub(super) async fn instance_page(
    herald: &Herald,
    s: &SessionRecord,
    id: &str,
    error: &str,
) -> Response {
    let result = async {
        let id = InstanceId::parse(id)?;
        herald.instance(&s.caller, &id).await
    }
    .await;
    match result {
        Ok(i) => {
            let mut fields: Vec<Value> = i
                .data
                .as_map()
                .iter()
                .map(|(k, v)| json!({"key": k, "value": match v { Value::String(t) => t.clone(), other => other.to_string() }}))
                .collect();
            fields.extend((0..2).map(|_| json!({"key": "", "value": ""})));
            page(
                "instance.html",
                s,
                "processes",
                context! { instance => to_json(&i), fields => fields, error => error },
            )
        }
        Err(e) => error_page(Some(s), e),
    }
}

pub(super) async fn save_instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let result = async {
        let id = InstanceId::parse(&id)?;
        let current = herald.instance(&s.caller, &id).await?;
        let wanted = data_from_fields(&form)?;
        // The form shows the whole data: fields left out are removed (null in a merge patch).
        let mut patch = wanted.clone();
        for key in current.data.as_map().keys() {
            if !wanted.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
        let change = InstanceChange {
            data: Some(InstanceData::parse(Value::Object(patch))?),
            status: Some(InstanceStatus::parse(field(&form, "status"))?),
            if_match: field(&form, "version").parse().ok(),
        };
        herald.update_instance(&s.caller, &id, &change).await
    }
    .await;
    match result {
        Ok(u) => see_other(&format!("/ui/instances/{}", u.instance.id)),
        Err(Error::Internal(e)) => error_page(Some(&s), Error::Internal(e)),
        Err(e) => instance_page(&herald, &s, &id, &e.to_string()).await,
    }
}

pub(super) async fn delete_instance(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    instance_action(
        &s,
        &form,
        &id,
        async |id| {
            herald.delete_instance(&s.caller, &id).await?;
            Ok(id)
        },
        |id| format!("/ui/processes/{}", id.process_name()),
    )
    .await
}

pub(super) async fn recycle_bin(State(herald): State<Herald>, UiSession(s): UiSession) -> Response {
    match herald.recycle_bin(&s.caller, None, 200).await {
        Ok(list) => page(
            "recycle.html",
            &s,
            "recycle",
            context! { instances => to_json(&list.items) },
        ),
        Err(e) => error_page(Some(&s), e),
    }
}

pub(super) async fn purge(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    instance_action(
        &s,
        &form,
        &id,
        async |id| herald.purge_instance(&s.caller, &id).await,
        |()| "/ui/admin/recycle-bin".to_owned(),
    )
    .await
}

pub(super) async fn restore(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    instance_action(
        &s,
        &form,
        &id,
        async |id| herald.restore_instance(&s.caller, &id).await,
        |i| format!("/ui/instances/{}", i.id),
    )
    .await
}

/// A form's action on one instance: checks the form's token, parses the ID, runs `act`, and
/// goes where `then` says, or shows the error.
async fn instance_action<T>(
    s: &SessionRecord,
    form: &Fields,
    id: &str,
    act: impl AsyncFnOnce(InstanceId) -> Result<T, Error>,
    then: impl FnOnce(T) -> String,
) -> Response {
    if let Some(r) = check_csrf(s, form) {
        return r;
    }
    let result = match InstanceId::parse(id) {
        Ok(id) => act(id).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(done) => see_other(&then(done)),
        Err(e) => error_page(Some(s), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_fields_become_json_data() {
        let form: Fields = vec![
            ("key".into(), "days".into()),
            ("value".into(), "3".into()),
            ("key".into(), "reason".into()),
            ("value".into(), "holiday".into()),
            ("key".into(), "".into()),
            ("value".into(), "ignored".into()),
        ];
        assert_eq!(
            Value::Object(data_from_fields(&form).unwrap()),
            json!({"days": 3, "reason": "holiday"})
        );
        let twice: Fields = vec![
            ("key".into(), "a".into()),
            ("value".into(), "1".into()),
            ("key".into(), "a".into()),
            ("value".into(), "2".into()),
        ];
        assert!(data_from_fields(&twice).is_err());
    }
}
