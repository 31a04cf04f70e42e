//! The platform bot's words in English and Brazilian Portuguese. Every text the bot sends comes
//! from [`text`]; a message is a [`Msg`] with its values, so the conversation logic holds no
//! prose and a test can check that both languages cover every message.

use serde::{Deserialize, Serialize};

/// A language the bot speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lang {
    #[serde(rename = "en")]
    En,
    #[serde(rename = "pt-BR")]
    PtBr,
}

impl Lang {
    /// The language for a Telegram `language_code` (Portuguese for any `pt`, else English).
    pub fn from_telegram(code: Option<&str>) -> Lang {
        match code {
            Some(c) if c.to_ascii_lowercase().starts_with("pt") => Lang::PtBr,
            _ => Lang::En,
        }
    }

    /// The BCP 47 tag, also the agent's `language` in the tenant spec.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::PtBr => "pt-BR",
        }
    }

    pub fn parse(tag: &str) -> Option<Lang> {
        match tag {
            "en" => Some(Lang::En),
            "pt-BR" => Some(Lang::PtBr),
            _ => None,
        }
    }
}

/// Everything the bot says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    ChooseLanguage,
    AskPurpose,
    PurposeInvalid,
    AskToken,
    TokenRefused {
        reason: String,
    },
    TokenCheckUnavailable,
    TokenInGroup,
    PrivateOnly,
    AskEmail,
    EmailInvalid {
        reason: String,
    },
    ChooseTier,
    TierButton {
        tier: String,
        price: Option<String>,
        tokens: u64,
    },
    Confirm {
        bot: String,
        tier: String,
        price: Option<String>,
    },
    Yes,
    Cancel,
    Cancelled,
    SettingUp {
        bot: String,
    },
    Live {
        bot: String,
    },
    Queued {
        bot: String,
    },
    Failed {
        reason: String,
    },
    UseButtons,
    Help,
    NoAgents,
    ChooseAgent,
    Status {
        name: String,
        state: String,
        pipeline: String,
        last: String,
    },
    Usage {
        name: String,
        used: u64,
        budget: Option<u64>,
        period: String,
    },
    Paused {
        name: String,
    },
    Resumed {
        name: String,
    },
    Unchanged {
        name: String,
    },
    SettingsMenu {
        name: String,
    },
    SettingModel,
    SettingLanguage,
    SettingAllow,
    ChooseModel,
    ChooseAgentLanguage,
    AskAllowFrom {
        own: i64,
    },
    AllowInvalid,
    Saved {
        name: String,
    },
    NoticeLive {
        name: String,
    },
    /// `by`: `customer`, `platform` (an admin or an SRE) or `billing`.
    NoticeSuspended {
        name: String,
        by: String,
    },
    /// `by` as for [`Msg::NoticeSuspended`].
    NoticeReactivated {
        name: String,
        by: String,
    },
    NoticeConnectionAdded {
        name: String,
        provider: String,
    },
    NoticeConnectionRemoved {
        name: String,
        provider: String,
    },
    NoticeBudget {
        name: String,
        percent: u32,
        used: u64,
        budget: u64,
    },
    /// From the cluster status (`cluster::status::HealthNotice`): to the owner, or to an admin.
    NoticeUnhealthy {
        name: String,
        reason: String,
        admin: bool,
    },
    NoticeRecovered {
        name: String,
        admin: bool,
    },
}

fn l(lang: Lang, en: &str, pt: &str) -> String {
    match lang {
        Lang::En => en.to_owned(),
        Lang::PtBr => pt.to_owned(),
    }
}

fn millions(tokens: u64) -> String {
    if tokens >= 1_000_000 && tokens % 100_000 == 0 {
        let m = tokens as f64 / 1_000_000.0;
        format!("{}M", format!("{m:.1}").trim_end_matches(".0"))
    } else {
        tokens.to_string()
    }
}

/// The text of `msg` in `lang`.
pub fn text(lang: Lang, msg: &Msg) -> String {
    use Msg::*;
    match msg {
        ChooseLanguage => "Welcome to openclaw.cloud! Which language shall we speak?\nBem-vindo ao openclaw.cloud! Em que língua vamos conversar?".into(),
        AskPurpose => l(lang,
            "Great. In one sentence: what should your agent do for you? (for example \"answer my email and keep my calendar\")",
            "Ótimo. Em uma frase: o que o seu agente deve fazer por você? (por exemplo \"responder meus e-mails e cuidar da minha agenda\")"),
        PurposeInvalid => l(lang,
            "Please write one plain sentence of at most 300 characters.",
            "Escreva uma frase simples de no máximo 300 caracteres."),
        AskToken => l(lang,
            "Your agent talks to you through its own Telegram bot. To make it:\n1. Open @BotFather\n2. Send /newbot and choose a name and a username ending in \"bot\"\n3. Paste the token BotFather gives you here (it looks like 123456789:AAH...).",
            "Seu agente conversa com você pelo próprio bot do Telegram. Para criá-lo:\n1. Abra o @BotFather\n2. Envie /newbot e escolha um nome e um username terminado em \"bot\"\n3. Cole aqui o token que o BotFather lhe der (parece 123456789:AAH...)."),
        TokenRefused { reason } => match lang {
            Lang::En => format!("Telegram refused that token ({reason}). Copy the whole token from @BotFather again, or get a new one there with /token, and paste it here."),
            Lang::PtBr => format!("O Telegram recusou esse token ({reason}). Copie o token inteiro do @BotFather de novo, ou peça um novo lá com /token, e cole aqui."),
        },
        TokenCheckUnavailable => l(lang,
            "Telegram could not be reached to check the token. Please paste it again in a minute.",
            "Não foi possível falar com o Telegram para verificar o token. Cole-o de novo daqui a um minuto."),
        TokenInGroup => l(lang,
            "Never post a bot token in a group: everyone here can now control that bot. I did not use it. Open @BotFather, send /revoke, pick the bot, and send me the new token in a private chat.",
            "Nunca publique um token de bot em um grupo: todos aqui podem controlar esse bot agora. Eu não o usei. Abra o @BotFather, envie /revoke, escolha o bot e me mande o novo token em um chat privado."),
        PrivateOnly => l(lang,
            "Let's talk in a private chat: open a chat with me and send /start.",
            "Vamos conversar em um chat privado: abra um chat comigo e envie /start."),
        AskEmail => l(lang,
            "Which email address should we use for your account (receipts and important notices)?",
            "Qual endereço de e-mail devemos usar na sua conta (recibos e avisos importantes)?"),
        EmailInvalid { reason } => match lang {
            Lang::En => format!("That email address does not work ({reason}). Please send it again."),
            Lang::PtBr => format!("Esse endereço de e-mail não serve ({reason}). Envie de novo, por favor."),
        },
        ChooseTier => l(lang, "Choose a plan:", "Escolha um plano:"),
        TierButton { tier, price, tokens } => {
            let tokens = millions(*tokens);
            match (lang, price) {
                (Lang::En, Some(p)) => format!("{tier} · {p}/month · {tokens} tokens"),
                (Lang::En, None) => format!("{tier} · {tokens} tokens/month"),
                (Lang::PtBr, Some(p)) => format!("{tier} · {p}/mês · {tokens} tokens"),
                (Lang::PtBr, None) => format!("{tier} · {tokens} tokens/mês"),
            }
        }
        Confirm { bot, tier, price } => {
            let price = price.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
            match lang {
                Lang::En => format!("Create your agent @{bot} on the {tier} plan{price}?"),
                Lang::PtBr => format!("Criar o seu agente @{bot} no plano {tier}{price}?"),
            }
        }
        Yes => l(lang, "Yes, create it", "Sim, criar"),
        Cancel => l(lang, "Cancel", "Cancelar"),
        Cancelled => l(lang, "Cancelled. Send /start whenever you want to begin again.", "Cancelado. Envie /start quando quiser recomeçar."),
        SettingUp { bot } => match lang {
            Lang::En => format!("Your agent @{bot} is being set up."),
            Lang::PtBr => format!("Seu agente @{bot} está sendo preparado."),
        },
        Live { bot } => match lang {
            Lang::En => format!("Your agent is live: say hi to @{bot}!"),
            Lang::PtBr => format!("Seu agente está no ar: diga oi para @{bot}!"),
        },
        Queued { bot } => match lang {
            Lang::En => format!("Your agent @{bot} is saved and will be set up as soon as our deployment system is reachable again."),
            Lang::PtBr => format!("Seu agente @{bot} foi salvo e será preparado assim que nosso sistema de implantação voltar a responder."),
        },
        Failed { reason } => match lang {
            Lang::En => format!("That did not work: {reason}"),
            Lang::PtBr => format!("Isso não deu certo: {reason}"),
        },
        UseButtons => l(lang, "Please use the buttons above, or send /cancel.", "Use os botões acima, ou envie /cancel."),
        Help => l(lang,
            "I look after your agent:\n/start create your agent\n/status its state and last change\n/usage this month's tokens\n/settings model, language, who may talk to it\n/pause and /resume\n/cancel stop what we are doing\n/help this list",
            "Eu cuido do seu agente:\n/start criar o seu agente\n/status estado e última alteração\n/usage tokens deste mês\n/settings modelo, idioma, quem pode falar com ele\n/pause e /resume\n/cancel parar o que estamos fazendo\n/help esta lista"),
        NoAgents => l(lang, "You have no agent yet. Send /start to create one.", "Você ainda não tem um agente. Envie /start para criar um."),
        ChooseAgent => l(lang, "Which agent?", "Qual agente?"),
        Status { name, state, pipeline, last } => match lang {
            Lang::En => format!("{name}: {state}\nPipeline: {pipeline}\nLast change: {last}"),
            Lang::PtBr => format!("{name}: {state}\nImplantação: {pipeline}\nÚltima alteração: {last}"),
        },
        Usage { name, used, budget, period } => match (lang, budget) {
            (Lang::En, Some(b)) => format!("{name}, {period}: {used} of {b} tokens ({}%)", percent(*used, *b)),
            (Lang::En, None) => format!("{name}, {period}: {used} tokens"),
            (Lang::PtBr, Some(b)) => format!("{name}, {period}: {used} de {b} tokens ({}%)", percent(*used, *b)),
            (Lang::PtBr, None) => format!("{name}, {period}: {used} tokens"),
        },
        Paused { name } => match lang {
            Lang::En => format!("{name} is paused. /resume brings it back."),
            Lang::PtBr => format!("{name} está pausado. /resume o traz de volta."),
        },
        Resumed { name } => match lang {
            Lang::En => format!("{name} is running again."),
            Lang::PtBr => format!("{name} está funcionando de novo."),
        },
        Unchanged { name } => match lang {
            Lang::En => format!("{name} already was in that state; nothing changed."),
            Lang::PtBr => format!("{name} já estava nesse estado; nada mudou."),
        },
        SettingsMenu { name } => match lang {
            Lang::En => format!("What do you want to change for {name}?"),
            Lang::PtBr => format!("O que você quer mudar em {name}?"),
        },
        SettingModel => l(lang, "Model", "Modelo"),
        SettingLanguage => l(lang, "Language", "Idioma"),
        SettingAllow => l(lang, "Who may talk to it", "Quem pode falar com ele"),
        ChooseModel => l(lang, "Choose the model:", "Escolha o modelo:"),
        ChooseAgentLanguage => l(lang, "Which language should your agent speak?", "Em que idioma o seu agente deve falar?"),
        AskAllowFrom { own } => match lang {
            Lang::En => format!("Send the Telegram user ids (numbers) of everyone who may talk to your agent, separated by spaces. Yours is {own}."),
            Lang::PtBr => format!("Envie os ids de usuário do Telegram (números) de todos que podem falar com o seu agente, separados por espaços. O seu é {own}."),
        },
        AllowInvalid => l(lang,
            "Send 1 to 20 Telegram user ids: positive numbers separated by spaces.",
            "Envie de 1 a 20 ids de usuário do Telegram: números positivos separados por espaços."),
        Saved { name } => match lang {
            Lang::En => format!("Saved. {name} restarts with the new settings."),
            Lang::PtBr => format!("Salvo. {name} reinicia com as novas configurações."),
        },
        NoticeLive { name } => match lang {
            Lang::En => format!("Your agent {name} is live."),
            Lang::PtBr => format!("Seu agente {name} está no ar."),
        },
        NoticeSuspended { name, by } => match lang {
            Lang::En => format!("Your agent {name} was suspended by {}.", by_whom(lang, by)),
            Lang::PtBr => format!("Seu agente {name} foi suspenso por {}.", by_whom(lang, by)),
        },
        NoticeReactivated { name, by } => match lang {
            Lang::En => format!("Your agent {name} is active again, reactivated by {}.", by_whom(lang, by)),
            Lang::PtBr => format!("Seu agente {name} está ativo de novo, reativado por {}.", by_whom(lang, by)),
        },
        NoticeConnectionAdded { name, provider } => match lang {
            Lang::En => format!("Your agent {name} is now connected to {}.", provider_name(provider)),
            Lang::PtBr => format!("Seu agente {name} agora está conectado ao {}.", provider_name(provider)),
        },
        NoticeConnectionRemoved { name, provider } => match lang {
            Lang::En => format!("Your agent {name} is no longer connected to {}.", provider_name(provider)),
            Lang::PtBr => format!("Seu agente {name} não está mais conectado ao {}.", provider_name(provider)),
        },
        NoticeBudget { name, percent, used, budget } => match (lang, *percent >= 100) {
            (Lang::En, true) => format!("Your agent {name} has used its whole monthly budget ({used} of {budget} tokens): it cannot answer until next month."),
            (Lang::En, false) => format!("Your agent {name} has used {percent}% of its monthly budget ({used} of {budget} tokens)."),
            (Lang::PtBr, true) => format!("Seu agente {name} usou todo o orçamento do mês ({used} de {budget} tokens): ele não pode responder até o mês que vem."),
            (Lang::PtBr, false) => format!("Seu agente {name} usou {percent}% do orçamento do mês ({used} de {budget} tokens)."),
        },
        NoticeUnhealthy { name, reason, admin } => match (lang, admin) {
            (Lang::En, false) => format!("Your agent {name} is not running ({reason}). We are looking into it."),
            (Lang::En, true) => format!("Tenant {name} is unhealthy: {reason}"),
            (Lang::PtBr, false) => format!("Seu agente {name} não está rodando ({reason}). Estamos verificando."),
            (Lang::PtBr, true) => format!("O tenant {name} não está saudável: {reason}"),
        },
        NoticeRecovered { name, admin } => match (lang, admin) {
            (Lang::En, false) => format!("Your agent {name} is running again."),
            (Lang::En, true) => format!("Tenant {name} is running again."),
            (Lang::PtBr, false) => format!("Seu agente {name} está rodando de novo."),
            (Lang::PtBr, true) => format!("O tenant {name} está rodando de novo."),
        },
    }
}

/// Who made a state change, as the notices say it.
fn by_whom(lang: Lang, by: &str) -> &'static str {
    match (lang, by) {
        (Lang::En, "customer") => "you",
        (Lang::En, "billing") => "billing (an unpaid invoice)",
        (Lang::En, _) => "the platform's support team",
        (Lang::PtBr, "customer") => "você",
        (Lang::PtBr, "billing") => "cobrança (uma fatura em aberto)",
        (Lang::PtBr, _) => "equipe de suporte da plataforma",
    }
}

/// A provider's name as its users know it (`github` is GitHub).
fn provider_name(provider: &str) -> String {
    match provider {
        "google" => "Google".into(),
        "github" => "GitHub".into(),
        "slack" => "Slack".into(),
        "linear" => "Linear".into(),
        "notion" => "Notion".into(),
        "jira" => "Jira".into(),
        other => other.to_owned(),
    }
}

fn percent(used: u64, budget: u64) -> u64 {
    used.saturating_mul(100).checked_div(budget).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_differ_and_tags_round_trip() {
        for msg in [Msg::AskPurpose, Msg::Help, Msg::AskToken, Msg::TokenInGroup] {
            assert_ne!(text(Lang::En, &msg), text(Lang::PtBr, &msg));
        }
        for lang in [Lang::En, Lang::PtBr] {
            assert_eq!(Lang::parse(lang.tag()), Some(lang));
        }
        assert_eq!(Lang::from_telegram(Some("pt-br")), Lang::PtBr);
        assert_eq!(Lang::from_telegram(Some("de")), Lang::En);
        assert_eq!(millions(5_000_000), "5M");
        assert_eq!(millions(1_500_000), "1.5M");
    }

    #[test]
    fn notices_say_who_and_which_provider() {
        let by = |by: &str, lang| {
            text(
                lang,
                &Msg::NoticeReactivated {
                    name: "acme".into(),
                    by: by.into(),
                },
            )
        };
        assert!(by("platform", Lang::En).contains("support team"));
        assert!(by("billing", Lang::En).contains("billing"));
        assert!(by("customer", Lang::PtBr).contains("por você"));
        let added = Msg::NoticeConnectionAdded {
            name: "acme".into(),
            provider: "github".into(),
        };
        assert!(text(Lang::En, &added).contains("connected to GitHub"));
        assert!(text(Lang::PtBr, &added).contains("conectado ao GitHub"));
    }
}
