//! The model families a binary knows, by name: the built-in ones and any a user's crate
//! registers, each with its training recipes. Settings, help texts and the command line look
//! names and recipes up here; what a family *does* is generic code run for its own type (see
//! [`TrainSettings::resolve`](crate::jobs::settings::TrainSettings::resolve) and the
//! `nestednet-cli` crate's `App`), so a registered family gets every job and command the
//! built-in ones get.

use nestednet_models::{
    ModelFamily, NestedLanguageModelConfig, NestedMnistCnnConfig, NestedResNetConfig,
    NestedTextClassifierConfig, NestedVitConfig,
};

use crate::error::{Result, TrainError};
use crate::jobs::recipes::{
    FamilyRecipes, MNIST_CNN_RECIPES, RESNET_RECIPES, Recipe, RecipeContext, TEXT_RECIPES, VIT_RECIPES,
};

/// One registered family: what the registry needs to know of it without its type.
#[derive(Debug, Clone, Copy)]
pub struct FamilyEntry {
    /// Its key in run folders ([`ModelFamily::FAMILY`]).
    pub key: &'static str,
    /// The names it answers to, for help texts and errors.
    pub names: &'static [&'static str],
    /// Whether a model name is one of its.
    pub claims: fn(&str) -> bool,
    /// Its recipes.
    pub recipes: FamilyRecipes,
}

impl FamilyEntry {
    /// The entry of family `F`, with `recipes`.
    pub fn of<F: ModelFamily>(recipes: FamilyRecipes) -> Self {
        Self { key: F::FAMILY, names: F::names(), claims: F::claims, recipes }
    }
}

/// The model families a binary knows (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Registry {
    families: Vec<FamilyEntry>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The built-in families: `mnist-cnn`, the residual networks (`mnist-resnet`,
    /// `resnet-N`, `wrn-D-K`, `resnet-18`), the ViTs (`vit-tiny`, `vit-small`), the text
    /// classifiers (`text-tiny`, `text-small`) and the language models (`lm-tiny`, `lm-small`),
    /// with their recipes.
    pub fn builtin() -> Self {
        Self::empty()
            .with(FamilyEntry::of::<NestedMnistCnnConfig>(MNIST_CNN_RECIPES))
            .with(FamilyEntry::of::<NestedResNetConfig>(RESNET_RECIPES))
            .with(FamilyEntry::of::<NestedVitConfig>(VIT_RECIPES))
            .with(FamilyEntry::of::<NestedTextClassifierConfig>(TEXT_RECIPES))
            .with(FamilyEntry::of::<NestedLanguageModelConfig>(TEXT_RECIPES))
    }

    /// No family at all.
    pub fn empty() -> Self {
        Self { families: Vec::new() }
    }

    /// The same registry with `entry` too; an entry of the same key replaces the old one.
    pub fn with(mut self, entry: FamilyEntry) -> Self {
        self.families.retain(|f| f.key != entry.key);
        self.families.push(entry);
        self
    }

    /// The families, in registration order.
    pub fn families(&self) -> &[FamilyEntry] {
        &self.families
    }

    /// Every name the families answer to.
    pub fn names(&self) -> Vec<&'static str> {
        self.families.iter().flat_map(|f| f.names.iter().copied()).collect()
    }

    /// The family the model `name` belongs to; an error listing the known names otherwise.
    pub fn family_of(&self, name: &str) -> Result<&FamilyEntry> {
        self.families.iter().find(|f| (f.claims)(name)).ok_or_else(|| {
            TrainError::Model(nestednet_models::ModelError::UnknownModel {
                name: name.to_string(),
                known: self.names().join(", "),
            })
        })
    }

    /// The family of key `key` (what a run folder records).
    pub fn family(&self, key: &str) -> Result<&FamilyEntry> {
        self.families.iter().find(|f| f.key == key).ok_or_else(|| {
            TrainError::Invalid(format!(
                "no model family `{key}` is registered in this build (registered: {})",
                self.families.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Every named training recipe: [`Recipe::PLAIN`] and each family's, once each (families
    /// may share a recipe, as the text classifiers and language models do).
    pub fn recipes(&self) -> Vec<&'static Recipe> {
        let mut out = vec![&Recipe::PLAIN];
        for recipe in self.families.iter().flat_map(|f| f.recipes.recipes.iter()) {
            if !out.iter().any(|r| r.name == recipe.name) {
                out.push(recipe);
            }
        }
        out
    }

    /// The recipe called `name`.
    pub fn recipe(&self, name: &str) -> Result<&'static Recipe> {
        self.recipes().into_iter().find(|r| r.name == name).ok_or_else(|| TrainError::UnknownRecipe {
            name: name.to_string(),
            known: self.recipes().iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// The recipe the model `model` trains with when the user gives none ([`Recipe::PLAIN`] for
    /// a family without one).
    pub fn default_recipe(&self, model: &str, context: RecipeContext) -> &'static Recipe {
        self.families.iter().find_map(|f| (f.recipes.default)(model, context)).unwrap_or(&Recipe::PLAIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_recipes_are_found_and_unknown_ones_named() {
        let registry = Registry::builtin();
        assert_eq!(registry.family_of("wrn-32-4").unwrap().key, "resnet");
        assert_eq!(registry.family_of("mnist-cnn").unwrap().key, "mnist-cnn");
        let e = registry.family_of("vgg-16").unwrap_err().to_string();
        assert!(
            e.contains("unknown model `vgg-16`") && e.contains("mnist-cnn") && e.contains("wrn-D-K"),
            "{e}"
        );
        assert_eq!(registry.default_recipe("mnist-resnet", RecipeContext::default()).name, "mnist-resnet");
        assert_eq!(registry.default_recipe("resnet-18", RecipeContext::default()).name, "cifar-resnet");
        let fine_tune = RecipeContext { fine_tune: true, ..Default::default() };
        assert_eq!(registry.default_recipe("mnist-cnn", fine_tune).name, "mnist-cnn-fine-tune");
        assert_eq!(registry.recipe("plain").unwrap(), &Recipe::PLAIN);
        let e = registry.recipe("fast").unwrap_err().to_string();
        assert!(e.contains("unknown recipe `fast`") && e.contains("cifar-resnet"), "{e}");
        assert!(
            registry
                .family("transformer")
                .unwrap_err()
                .to_string()
                .contains("registered: mnist-cnn, resnet, vit, text-classifier, language-model")
        );
        assert_eq!(registry.family_of("lm-tiny").unwrap().key, "language-model");
        assert_eq!(registry.family_of("text-small").unwrap().key, "text-classifier");
        assert_eq!(registry.default_recipe("lm-small", RecipeContext::default()).name, "text");
        assert_eq!(registry.recipes().iter().filter(|r| r.name == "text").count(), 1);
    }
}
